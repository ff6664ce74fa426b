"""Serving: ``autosteer serve``, an OpenAI-compatible server with per-request steering, and the
playground page (:mod:`autosteer.serve.playground`).

Needs the ``serve`` extra (``pip install 'autosteer[serve]'``: FastAPI and uvicorn).
:func:`create_app` builds the ASGI app; ``autosteer serve --model ...`` runs it on uvicorn.
See ``docs/serve.md``.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        try:
            from autosteer.serve.app import create_app
        except ImportError as exc:
            if exc.name in ("fastapi", "starlette", "uvicorn"):
                raise ImportError(
                    f"autosteer.serve needs {exc.name}: python -m pip install 'autosteer[serve]'", name=exc.name
                ) from None
            raise
        return create_app
    raise AttributeError(f"module 'autosteer.serve' has no attribute {name!r}")
