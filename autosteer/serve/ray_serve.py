"""``autosteer serve`` on Ray Serve: the same app as replicas behind Ray's HTTP proxy.

Each replica loads the model and runs :func:`autosteer.serve.create_app` (its own batching
engine); Ray Serve's proxy spreads the requests over the replicas.  Needs ``ray[serve]``::

    import ray
    from ray import serve
    from autosteer.serve.ray_serve import deployment

    ray.init()                                             # or ray.init(address="auto") on a cluster
    serve.start(http_options={"host": "127.0.0.1", "port": 8000})
    serve.run(deployment("smollm2", presets={"weddings": "/shared/best.json"}, num_replicas=4,
                         ray_actor_options={"num_cpus": 4}), route_prefix="/")

On several machines: ``ray start --head`` on one, ``ray start --address=HEAD:6379`` on the
others, then the lines above on any of them with ``ray.init(address="auto")``; every machine
needs the model (``load_model`` names or a path present on each) and the preset files at the
same paths, and ``http_options={"host": "0.0.0.0", ...}`` with an ``api_key`` to be reachable
from outside.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["AutoSteerReplica", "deployment"]


class AutoSteerReplica:
    """One Ray Serve replica: the model, loaded with :func:`autosteer.load_model`, behind
    :func:`~autosteer.serve.create_app` (Ray Serve builds the ASGI app after ``__init__``)."""

    def __init__(
        self, model: str, presets: Mapping[str, str] | None, app_kwargs: Mapping[str, Any], threads: int | None = None
    ):
        from autosteer.models import load_model
        from autosteer.serve.app import create_app
        from autosteer.serve.server import served_name

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        m, tokenizer = load_model(model)
        kwargs = dict(app_kwargs)
        kwargs.setdefault("model_name", served_name(model))
        self._app = create_app(m, tokenizer, presets=dict(presets or {}), **kwargs)

    def __serve_build_asgi_app__(self):
        return self._app


def deployment(
    model: str,
    *,
    presets: Mapping[str, str] | None = None,
    num_replicas: int = 2,
    ray_actor_options: Mapping[str, Any] | None = None,
    name: str = "autosteer",
    threads: int | None = None,
    **app_kwargs,
):
    """A bound Ray Serve application for ``serve.run``: ``num_replicas`` replicas of the
    server on ``model`` (a :func:`autosteer.load_model` name or path).  ``app_kwargs`` go to
    :func:`~autosteer.serve.create_app` (``max_batch``, ``max_tokens``, ``api_key``...);
    ``threads``: torch threads per replica; ``ray_actor_options``: each replica's resources
    (default one CPU)."""
    from ray import serve

    from autosteer._checks import check_int

    num_replicas = check_int("num_replicas", num_replicas, minimum=1)
    ingress = serve.ingress()(AutoSteerReplica)
    dep = serve.deployment(
        ingress, name=name, num_replicas=num_replicas, ray_actor_options=dict(ray_actor_options or {"num_cpus": 1})
    )
    # serve.deployment(cls, **options) returns a Deployment; ray's annotations type only the decorator form
    return dep.bind(model, dict(presets or {}), dict(app_kwargs), threads)  # type: ignore[attr-defined]
