"""What the search viewer shows, read from a search's results log.

:class:`LogWatch` re-reads the log only when it changed (size or
modification time) and turns it into one JSON-ready snapshot: every trial's
score and status with the best so far, the held-out scores, the metric's other
measurements (the "axes": concept rate, fluency, ...), the counts and the best
configuration's code exactly as ``autosteer best`` prints them.  A log that
:func:`~autosteer.search.log.read_log` refuses becomes a snapshot with the
error message and the text of the line it names.  No torch, no model.
"""

from __future__ import annotations

import math
import os
import re
import threading
from typing import Any

__all__ = ["LogWatch", "log_snapshot"]

_LINE = re.compile(r" line (\d+)\b")
# the measurements the viewer plots, in this order, when the metric reports them (steered_answer
# reports them all, steered_concept the concept rate and the fluency); a metric with none of
# them gets its own first few by name
_AXES = ("concept_rate", "on_request", "relevance", "fluency", "fluency_excess", "stuck", "success")
_MAX_OTHER_AXES = 6


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _line_text(path: str, lineno: int, limit: int = 400) -> str | None:
    """The text of line ``lineno`` (1-based) of the file, cut to ``limit`` characters."""
    try:
        with open(path, "rb") as fh:
            for i, raw in enumerate(fh, start=1):
                if i == lineno:
                    text = raw.decode("utf-8", "replace").rstrip("\r\n")
                    return text if len(text) <= limit else text[:limit] + " ..."
    except OSError:
        return None
    return None


def _axes(records) -> list[str]:
    """The detail names to plot (held-out ones, ``holdout_NAME``, are drawn beside ``NAME``)."""
    names: set[str] = set()
    for r in records:
        names.update(k for k in (r.details or {}) if not k.startswith("holdout_"))
    known = [n for n in _AXES if n in names]
    return known or sorted(names)[:_MAX_OTHER_AXES]


def _details(details: dict[str, float] | None) -> dict[str, float | None]:
    """A row's details for JSON: a value that is not finite (a relevance not measured) is null."""
    return {k: _finite(v) for k, v in (details or {}).items()}


def log_snapshot(path: str | os.PathLike) -> dict[str, Any]:
    """One reading of the log as a JSON-ready dict (see the module docstring).

    Keys: ``log``, ``ok``, ``error`` (None, or ``{"message", "line", "text"}``),
    ``metric``, ``lower_is_better``, ``trials`` (candidates evaluated, the
    baseline excluded), ``trials_text`` (``"N trials"`` as ``autosteer best``
    says it), ``keeps``, ``discards``, ``crashes``, ``baseline_score``,
    ``best_score``, ``best_iteration``, ``baseline_holdout``, ``best_holdout``,
    ``best_description``, ``best_code`` (``autosteer best --code``'s lines),
    ``best_candidate`` (the best's vectors in ``best.json`` form, concepts
    included), ``points`` (one per row: ``iteration``, ``round``, ``status``,
    ``score``, ``best``, ``holdout``, ``details``, ``description``, ``error``),
    ``axes`` (the details to plot, see ``_AXES``), ``incomplete`` (a last
    line still being written was skipped), ``config`` (the run's configuration).
    """
    from autosteer.errors import AutoSteerError
    from autosteer.search.log import read_log
    from autosteer.search.results import results_from_history, trials_text
    from autosteer.search.trial import running_best

    path = os.fspath(path)
    out: dict[str, Any] = {"log": path, "ok": False, "error": None}
    try:
        history = read_log(path, allow_incomplete=True)
    except FileNotFoundError:
        out["error"] = {
            "message": f"{path} does not exist (yet): waiting for the search to write it",
            "line": None,
            "text": None,
        }
        return out
    except (AutoSteerError, OSError) as exc:
        message = str(exc)
        m = _LINE.search(message)
        lineno = int(m.group(1)) if m else None
        out["error"] = {
            "message": message,
            "line": lineno,
            "text": None if lineno is None else _line_text(path, lineno),
        }
        return out
    config = history.config or {}
    out.update(
        ok=True,
        config=config,
        metric=config.get("metric"),
        lower_is_better=bool(config.get("lower_is_better", False)),
        incomplete=history.incomplete_tail is not None,
        axes=_axes(history),
    )
    if not history:
        out.update(
            trials=0,
            trials_text=trials_text(0),
            keeps=0,
            discards=0,
            crashes=0,
            points=[],
            best_code=None,
            best_candidate=None,
            best_description=None,
            baseline_score=None,
            best_score=None,
            best_iteration=None,
            baseline_holdout=None,
            best_holdout=None,
        )
        return out
    results = results_from_history(history, config, log_path=path)
    best = results["best_candidate"]
    out.update(
        trials=results["iterations"],
        trials_text=trials_text(results["iterations"]),
        keeps=results["keeps"],
        discards=results["discards"],
        crashes=results["crashes"],
        baseline_score=results["baseline_score"],
        best_score=results["best_score"],
        best_iteration=results["best_iteration"],
        baseline_holdout=results["baseline_holdout"],
        best_holdout=results["best_holdout"],
        best_code=results["best_steer_code"],
        best_description="no steering" if best is None else best.describe(),
        best_candidate=None if best is None else best.to_dict(full=True),
        points=[
            {
                "iteration": r.iteration,
                "round": r.round,
                "status": r.status,
                "score": _finite(r.score),
                "best": b,
                "holdout": r.holdout_score,
                "details": _details(r.details),
                "description": "no steering" if not len(r.candidate) else r.candidate.describe(),
                "error": r.error,
                "elapsed_s": r.elapsed_s,
            }
            for r, b in zip(history, running_best(history))
        ],
    )
    return out


class LogWatch:
    """A log path and its latest snapshot, re-read only when the file changed.

    ``snapshot()`` is safe to call from several threads; ``version`` counts the
    readings that found the file changed (a client re-draws when it grows).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._snapshot: dict[str, Any] | None = None
        self.version = 0

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            stamp = self._stat()
            if self._snapshot is None or stamp is None or stamp != self._stamp:
                snap = log_snapshot(self.path)
                if snap != self._snapshot:
                    self.version += 1
                self._snapshot, self._stamp = snap, stamp
            return dict(self._snapshot, version=self.version)
