"""The playground's routes: its static files, the search viewer, and the viewer-only app.

Everything the pages need ships in this package (``static/``): plain HTML, CSS
and JavaScript, no build step, nothing fetched from elsewhere, so the pages
work offline.  The pages use relative URLs, so the routes work under a mount
prefix too.

* :func:`static_router` serves ``/playground/static/NAME`` (a fixed list).
* :func:`viewer_router` serves the search viewer: the page at ``/viewer`` and
  the log's latest snapshot at ``/viewer/log.json`` (re-read as the log grows).
* :func:`create_viewer_app` is the app ``autosteer view LOG`` runs: the viewer
  at ``/`` and ``/viewer``, no model.
* :func:`playground_router` serves the playground at ``/`` of ``autosteer serve``:
  the page, ``/playground/config.json`` (the schedule kinds and whether the
  tokenizer has a chat template) and ``/playground/code`` (a request's steering
  as ``steered.add(...)`` lines, checked exactly as the completion endpoints
  check it); :func:`add_playground` adds it to a served app (``create_app`` does),
  :func:`add_viewer` the search viewer (``autosteer serve --log``).
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations (Request) at run time
import json
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

__all__ = [
    "NEEDS_MODEL",
    "STATIC_FILES",
    "add_playground",
    "add_viewer",
    "create_viewer_app",
    "holdout_for_log",
    "page_html",
    "playground_router",
    "static_router",
    "steering_code",
    "viewer_router",
]

#: The files under ``static/`` the routes serve, with their media types.
STATIC_FILES: dict[str, str] = {
    "playground.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
}

#: What the viewer says about before/after answers when it runs without a model.
NEEDS_MODEL = (
    "Before/after answers of the held-out prompts need a model: run "
    "`autosteer serve --model MODEL --log LOG --holdout PROMPTS` "
    "(PROMPTS: the file the search held out)."
)

_NO_STORE = {"Cache-Control": "no-store"}


def _static_text(name: str) -> str:
    return (resources.files("autosteer.serve.playground") / "static" / name).read_text(encoding="utf-8")


def page_html(name: str) -> str:
    """The text of one of the shipped pages (``viewer.html``, ``index.html``)."""
    return _static_text(name)


def static_router():
    """Routes for ``/playground/static/NAME``: only the names in :data:`STATIC_FILES`."""
    from fastapi import APIRouter, HTTPException
    from fastapi.responses import Response

    router = APIRouter()

    @router.get("/playground/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        media = STATIC_FILES.get(name)
        if media is None:
            raise HTTPException(status_code=404, detail=f"no playground file {name!r}")
        return Response(_static_text(name), media_type=media, headers=_NO_STORE)

    return router


def viewer_router(
    log: str | os.PathLike, *, answers: Mapping[str, Any] | None = None, poll_s: float = 1.0, root: bool = False
):
    """The search viewer's routes on the results log ``log``.

    ``answers`` says what the page can show as before/after answers of the
    held-out prompts: None (no model: the page says they need one) or
    ``{"prompts": [...], "chat": bool, "max_tokens": int, "model": name}``, in
    which case the page asks the server's own completion endpoints for the
    unsteered and the best configuration's answers.  ``poll_s``: how often the
    page re-reads the log (seconds).  ``root=True`` also serves the page at ``/``.
    """
    from fastapi import APIRouter
    from fastapi.responses import HTMLResponse, JSONResponse

    from autosteer.serve.playground.viewer import LogWatch

    if not (isinstance(poll_s, (int, float)) and not isinstance(poll_s, bool) and 0.05 <= poll_s <= 3600):
        from autosteer.errors import InvalidArgumentError

        raise InvalidArgumentError(f"poll_s must be a number of seconds in [0.05, 3600], got {poll_s!r}")
    watch = LogWatch(log)
    model_answers: dict[str, Any]
    if answers is None:
        model_answers = {"available": False, "reason": NEEDS_MODEL}
    else:
        model_answers = {"available": True, **dict(answers)}
    router = APIRouter()

    def page() -> HTMLResponse:
        return HTMLResponse(page_html("viewer.html"), headers=_NO_STORE)

    router.add_api_route("/viewer", page, methods=["GET"], include_in_schema=False)
    if root:
        router.add_api_route("/", page, methods=["GET"], include_in_schema=False)

    @router.get("/viewer/log.json", include_in_schema=False)
    def log_json() -> JSONResponse:
        snap = watch.snapshot()
        snap["poll_s"] = poll_s
        snap["answers"] = model_answers
        return JSONResponse(snap, headers=_NO_STORE)

    return router


def create_viewer_app(log: str | os.PathLike, *, poll_s: float = 1.0):
    """The ASGI app of ``autosteer view LOG``: the search viewer at ``/``, no model."""
    from fastapi import FastAPI

    app = FastAPI(title="AutoSteer search viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(static_router())
    app.include_router(viewer_router(log, poll_s=poll_s, root=True))
    return app


def holdout_for_log(
    history_config: Mapping[str, Any], prompts: Sequence[Any], expected: Sequence[Any] | None, path: str
) -> None:
    """Check that ``prompts`` (read from ``path``) are the ones the search held out.

    The log's configuration keeps a hash of the held-out prompts and answers;
    a different file would pair the best configuration with prompts it was not
    scored on, so it is refused with both hashes named.
    """
    from autosteer._canonical import digest
    from autosteer.errors import InvalidArgumentError

    want = history_config.get("holdout")
    if want is None:
        raise InvalidArgumentError(f"--holdout {path}: the search of this log held out no prompts")
    got = digest([list(prompts), None if expected is None else list(expected)])
    if got != want:
        raise InvalidArgumentError(
            f"--holdout {path}: these are not the prompts the search held out (hash {got}, the log "
            f"records {want}); give the same file the search's --holdout read"
        )


def schedule_kinds_json() -> list[dict[str, Any]]:
    """The schedule table as the page's editor needs it: type, class and each parameter's
    name, kind (int/float), default, bounds and help."""
    from autosteer.steering.schedules import SCHEDULE_KINDS

    out = []
    for kind in SCHEDULE_KINDS.values():
        params = []
        for p in kind.params:
            params.append(
                {
                    "name": p.name,
                    "kind": p.kind,
                    "default": p.search_range[0] if p.required else p.default,
                    "min": p.domain.min,
                    "max": p.domain.max,
                    "doc": p.doc,
                }
            )
        out.append({"type": kind.type, "class_name": kind.class_name, "doc": kind.doc.split("\n")[0], "params": params})
    return out


def steering_code(vectors: Sequence[Any]) -> str:
    """``steered.add(...)`` lines for parsed request vectors (the serve room's ``VectorSpec`` s):
    the same lines :meth:`SteerCandidate.to_code` writes for texts and concepts; a raw
    direction (from a vector-file preset) becomes a ``vector=`` argument with a comment."""
    from autosteer.search.candidate import (
        SteerCandidate,
        SteerVector,
        _kinds,
        _schedule_args,
    )

    if not vectors:
        return "# no steering: the model as it is"
    named = [SteerVector(v.layer_idx, v.coeff, v.source, v.schedule) for v in vectors if v.kind in ("text", "concept")]
    lines = (
        SteerCandidate(tuple(named)).to_code().split("\n")
        if named
        else ["from autosteer import Steer", "steered = Steer(model, tokenizer)"]
    )
    imported = lines[0].removeprefix("from autosteer import ").split(", ")
    for v in vectors:
        if v.kind in ("text", "concept"):
            continue
        sched = ""
        if v.schedule is not None:
            cls = _kinds()[v.schedule["type"]].class_name
            sched = f", coeff_schedule={cls}({_schedule_args(v.schedule, ', ')})"
            if cls not in imported:
                imported.append(cls)
        lines.append(f"# a direction from a vector file: {len(v.source)} floats (a torch tensor)")
        lines.append(f"steered.add(layer_idx={v.layer_idx}, coeff={v.coeff!r}, vector=direction_{v.layer_idx}{sched})")
    lines[0] = "from autosteer import " + ", ".join(imported)
    return "\n".join(lines)


def playground_router():
    """The playground page at ``/`` and its two helpers (see the module docstring).

    Include it in an app made by :func:`autosteer.serve.create_app` (the helpers read
    ``app.state.autosteer``): ``app.include_router(playground_router())``.
    """
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(page_html("index.html"), headers=_NO_STORE)

    @router.get("/playground/config.json", include_in_schema=False)
    def config(request: Request) -> JSONResponse:
        served = request.app.state.autosteer
        viewer = getattr(request.app.state, "autosteer_viewer", None)
        return JSONResponse(
            {
                "model": served.name,
                "num_layers": served.info.num_layers,
                "hidden_size": served.info.hidden_size,
                "max_tokens": served.max_tokens,
                "max_coeff": served.info.max_coeff,
                "chat_template": bool(getattr(served.tokenizer, "chat_template", None)),
                "schedules": schedule_kinds_json(),
                "viewer": viewer,
            },
            headers=_NO_STORE,
        )

    @router.post("/playground/code", include_in_schema=False)
    async def code(request: Request) -> JSONResponse:
        from autosteer.serve.steering import RequestError, parse_steering

        served = request.app.state.autosteer
        try:
            body = json.loads(await request.body(), parse_constant=_refuse_constant)
            if not isinstance(body, dict):
                raise RequestError("the body must be a JSON object {\"steering\": ...}", None)
            steering = parse_steering(body.get("steering"), served.presets, served.info)
        except RequestError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        except (ValueError, RecursionError) as exc:
            return JSONResponse(
                {
                    "error": {
                        "message": f"the body is not valid JSON: {exc}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=400,
            )
        return JSONResponse({"code": steering_code(steering.vectors)})

    return router


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def add_playground(app):
    """Add the playground page (``/``), its helpers and its static files to an app made by
    :func:`autosteer.serve.create_app` (which does it)."""
    app.include_router(static_router())
    app.include_router(playground_router())
    return app


def add_viewer(
    app,
    log: str | os.PathLike,
    *,
    holdout: Sequence[Any] | None = None,
    chat: bool = False,
    max_tokens: int = 16,
    poll_s: float = 1.0,
    max_prompts: int = 16,
):
    """Add the search viewer (``/viewer``) on the results log ``log`` to a served app.

    With ``holdout`` (the prompts the search held out, see :func:`holdout_for_log`) the
    viewer shows their greedy answers unsteered and with the log's best configuration,
    asked from the app's own completion endpoints (chat ones when ``chat``), ``max_tokens``
    tokens each, for the first ``max_prompts`` prompts.  The playground links to the viewer.
    """
    answers = None
    if holdout is not None:
        answers = {
            "prompts": list(holdout)[:max_prompts],
            "total": len(holdout),
            "chat": bool(chat),
            "max_tokens": int(max_tokens),
            "model": app.state.autosteer.name,
        }
    app.include_router(viewer_router(log, answers=answers, poll_s=poll_s))
    app.state.autosteer_viewer = {"log": os.fspath(log), "url": "viewer"}
    return app
