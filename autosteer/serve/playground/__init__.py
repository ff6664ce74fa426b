"""The playground: the pages ``autosteer serve`` shows at ``/`` and the search viewer.

Plain HTML, CSS and JavaScript in ``static/`` (no build step, no CDN: they work
offline), served by the routes in :mod:`autosteer.serve.playground.app`; the
viewer's data comes from :mod:`autosteer.serve.playground.viewer`.
"""

from autosteer.serve.playground.app import (
    create_viewer_app,
    static_router,
    viewer_router,
)
from autosteer.serve.playground.viewer import LogWatch, log_snapshot

__all__ = ["LogWatch", "create_viewer_app", "log_snapshot", "static_router", "viewer_router"]
