"""Plot a search's history: every trial's score, the best so far, the baseline, the held-out scores.

matplotlib is an optional extra (``pip install autosteer[plot]``); it is
imported only when :func:`plot_history` is called.  The figure is built with
``matplotlib.figure.Figure`` directly, not through ``pyplot``, so no GUI
window opens, no global figure list grows in a loop, and it works headless.
A notebook displays the returned figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from autosteer.errors import InvalidArgumentError

__all__ = ["check_image_path", "plot_history"]


def check_image_path(path: str | os.PathLike) -> str:
    """``path`` as a string when matplotlib can write an image there (its extension names a
    format matplotlib writes, no extension means PNG, its folder exists), else
    :class:`InvalidArgumentError` naming the path and the formats; checked before any drawing."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plot_history needs matplotlib: pip install 'autosteer[plot]'") from None
    text = os.fspath(path)
    ext = os.path.splitext(text)[1].lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        raise InvalidArgumentError(
            f"cannot write a plot to {text!r}: {ext!r} is not an image format matplotlib writes "
            f"(use one of {', '.join(sorted(formats))})"
        )
    if os.path.isdir(text):
        raise InvalidArgumentError(f"cannot write a plot to {text!r}: it is a directory; give a file name")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise InvalidArgumentError(f"cannot write a plot to {text!r}: directory {parent!r} does not exist")
    return text


def _history_of(source: Any) -> tuple[list[Any], bool | None, str | None]:
    """Records, lower_is_better (if known) and the metric name (if known)."""
    if isinstance(source, (str, os.PathLike)):
        from autosteer.search.log import read_log

        hist = read_log(source, allow_incomplete=True)  # a log still being written plots too
        config = hist.config or {}
        return list(hist), config.get("lower_is_better"), config.get("metric")
    if isinstance(source, Mapping) and "history" in source:
        return list(source["history"]), source.get("lower_is_better"), source.get("metric")
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        config = getattr(source, "config", None) or {}
        return list(source), config.get("lower_is_better"), config.get("metric")
    raise InvalidArgumentError(
        f"plot_history takes SteerResults, a history list or a log path, got {type(source).__name__}"
    )


def _axes_subtitle(rows) -> str:
    """A second title line with the answer objective's axes, baseline -> best (held-out where measured)."""
    from autosteer.search.results import answer_axes
    from autosteer.search.trial import last_keep

    best = last_keep(rows)
    axes = answer_axes({"history": rows, "best_iteration": 0 if best is None else rows.index(best)})
    if not axes:
        return ""
    split = "holdout" if "holdout" in axes else "search"
    a, b = axes[split]["baseline"], axes[split]["best"]
    nan = float("nan")
    return (
        f"\n{'held-out' if split == 'holdout' else 'search prompts'}, baseline -> best: concept "
        f"{100 * a.get('concept_rate', nan):.0f}% -> {100 * b.get('concept_rate', nan):.0f}%, relevance "
        f"{a.get('relevance', nan):.2f} -> {b.get('relevance', nan):.2f}, fluency "
        f"{a.get('fluency_excess', nan):+.2f} -> {b.get('fluency_excess', nan):+.2f} nat/token, all three "
        f"{100 * a.get('success', nan):.0f}% -> {100 * b.get('success', nan):.0f}%"
    )


def plot_history(results_or_log_path: Any, path: str | os.PathLike | None = None, *, title: str | None = None):
    """Draw the score of every trial and the best-so-far line; return the ``Figure``.

    ``results_or_log_path`` is what :meth:`AutoSteerRunner.run` returned, its
    ``["history"]``, or the path of a results log.  Keeps are green dots,
    discards grey dots, crashes red crosses at the bottom edge (a crash has no
    usable score), the baseline a dashed line, the best so far a step line,
    held-out scores (measured for the baseline and each keep) orange diamonds.
    The x axis counts trials, the y axis names the metric and its direction.
    With ``path`` the figure is also saved there (format from the extension;
    an extension matplotlib cannot write is refused before any drawing).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plot_history needs matplotlib: pip install 'autosteer[plot]'") from None
    from autosteer.search.trial import running_best

    if path is not None:
        path = check_image_path(path)
    rows, lower_is_better, metric = _history_of(results_or_log_path)
    if not rows:
        raise InvalidArgumentError("the history is empty: nothing to plot")

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    base = rows[0]
    values = [r["score"] for r in rows] + [r["holdout_score"] for r in rows]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    lo, hi = min(finite), max(finite)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.05
    bottom = lo - pad

    def pts(status: str):
        sel = [r for r in rows if r["status"] == status]
        return [r["iteration"] for r in sel], [r["score"] for r in sel]

    ax.axhline(base["score"], color="0.4", linestyle="--", linewidth=1, label=f"baseline {base['score']:.4g}")
    it = [r["iteration"] for r in rows]
    ax.step(
        it,
        running_best(rows),  # type: ignore[arg-type]  # rows start at the baseline: no None
        where="post",
        color="tab:blue",
        linewidth=1.5,
        label="best so far",
    )
    x, y = pts("discard")
    if x:
        ax.scatter(x, y, s=18, color="0.6", label=f"discard ({len(x)})", zorder=3)
    x, y = pts("keep")
    if x:
        ax.scatter(x, y, s=40, color="tab:green", edgecolor="black", linewidth=0.6, label=f"keep ({len(x)})", zorder=4)
    crashes = [r["iteration"] for r in rows if r["status"] == "crash"]
    if crashes:
        ax.scatter(
            crashes,
            [bottom] * len(crashes),
            marker="x",
            s=30,
            color="tab:red",
            label=f"crash ({len(crashes)})",
            zorder=4,
        )
    held = [
        (r["iteration"], r["holdout_score"])
        for r in rows
        if r["holdout_score"] is not None and math.isfinite(r["holdout_score"])
    ]
    if held:
        ax.scatter(
            [h[0] for h in held],
            [h[1] for h in held],
            marker="D",
            s=30,
            color="tab:orange",
            edgecolor="black",
            linewidth=0.5,
            label=f"held-out ({len(held)})",
            zorder=5,
        )
    ax.set_ylim(bottom - pad * 0.5, hi + pad)
    ax.set_xlabel("trial (0 = baseline, unsteered)")
    ylabel = metric or "score"
    if lower_is_better is not None:
        ylabel += " (lower is better)" if lower_is_better else " (higher is better)"
    ax.set_ylabel(ylabel)
    ax.set_title((title or "AutoSteer search") + _axes_subtitle(rows), fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if path is not None:
        fig.savefig(path)
    return fig
