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
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

__all__ = ["NEEDS_MODEL", "STATIC_FILES", "create_viewer_app", "page_html", "static_router", "viewer_router"]

#: The files under ``static/`` the routes serve, with their media types.
STATIC_FILES: dict[str, str] = {
    "playground.css": "text/css; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
}

#: What the viewer says about before/after answers when it runs without a model.
NEEDS_MODEL = ("Before/after answers of the held-out prompts need a model: run "
               "`autosteer serve --model MODEL --log LOG --holdout PROMPTS` "
               "(PROMPTS: the file the search held out).")

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


def viewer_router(log: str | os.PathLike, *, answers: Mapping[str, Any] | None = None,
                  poll_s: float = 1.0, root: bool = False):
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


def holdout_for_log(history_config: Mapping[str, Any], prompts: Sequence[Any], expected: Sequence[Any] | None,
                    path: str) -> None:
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
            f"records {want}); give the same file the search's --holdout read")
