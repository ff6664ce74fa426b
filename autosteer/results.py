"""What a search found, derived from its history: :class:`SteerResults`.

The runner, ``autosteer best`` and the demo all read a search's outcome the
same way, from the records alone (:func:`results_from_history`): the
baseline is the first record, the best is the newest keep (each keep beat
everything before it), the counts are counted.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from autosteer.trial import TrialRecord, last_keep

__all__ = ["SteerResults", "results_from_history", "NO_STEERING_CODE"]

NO_STEERING_CODE = "# no steering configuration beat the baseline"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


class SteerResults(dict):
    """The outcome of a search: a dict with a readable ``str()``.

    Keys: ``baseline_score``, ``best_score``, ``best_candidate`` (a
    :class:`SteerCandidate`, or None when nothing beat the baseline),
    ``best_iteration`` (0 = the baseline), ``history`` (the
    :class:`~autosteer.trial.TrialRecord` s, baseline first; they read like
    dicts), ``keeps``, ``discards``, ``crashes``, ``iterations`` (trials run,
    baseline excluded), ``elapsed_s`` (over all sessions of a resumed run),
    ``best_steer_code`` (Python lines that rebuild the best configuration),
    ``baseline_holdout`` and ``best_holdout`` (None without holdout prompts),
    ``metric``, ``lower_is_better``, ``seed``, ``log_path``, ``stopped_early``
    (None, or why the run ended before ``max_iterations``).  Keys also read as
    attributes: ``results.best_score``.
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def summary(self) -> str:
        """The one-line report: baseline -> best, keeps/discards/crashes."""
        if self["best_candidate"] is None:
            found = "(no candidate beat the baseline)"
        else:
            found = f"(found at iteration {self['best_iteration']})"
        return (
            f"Baseline: {_fmt(self['baseline_score'])} -> Best: {_fmt(self['best_score'])} {found} | "
            f"keeps {self['keeps']}, discards {self['discards']}, crashes {self['crashes']}"
        )

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.get("baseline_holdout") is not None:
            lines.append(f"Held-out: {_fmt(self['baseline_holdout'])} -> {_fmt(self['best_holdout'])}")
        if self.get("stopped_early"):
            lines.append(f"Stopped early: {self['stopped_early']}")
        if self["best_candidate"] is not None:
            lines.append("Best configuration:")
        lines.append(self["best_steer_code"])
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<SteerResults {self['metric']}: baseline {_fmt(self['baseline_score'])} -> best "
            f"{_fmt(self['best_score'])} at iteration {self['best_iteration']}, {self['iterations']} trials>"
        )

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the report, not a huge dict
        p.text(str(self))


def results_from_history(history: Sequence[TrialRecord], config: Mapping[str, Any] | None = None, *,
                         log_path: str | None = None, stopped_early: str | None = None) -> SteerResults:
    """The results of a search from its records (and the run configuration, for the metric's name)."""
    config = dict(config or {})
    base = history[0] if history else None
    best = last_keep(history)
    counts = {s: sum(1 for r in history if r.status == s) for s in ("keep", "discard", "crash")}
    candidate = None if best is None else best.candidate
    return SteerResults(
        baseline_score=None if base is None else base.score,
        best_score=None if base is None else (best or base).score,
        best_candidate=candidate,
        best_iteration=0 if best is None else best.iteration,
        history=list(history),
        keeps=counts["keep"],
        discards=counts["discard"],
        crashes=counts["crash"],
        iterations=max(0, len(history) - 1),
        elapsed_s=history[-1].elapsed_s if history else 0.0,
        best_steer_code=NO_STEERING_CODE if candidate is None else candidate.to_code(),
        baseline_holdout=None if base is None else base.holdout_score,
        best_holdout=None if base is None else (best or base).holdout_score,
        metric=config.get("metric"),
        lower_is_better=config.get("lower_is_better"),
        seed=config.get("seed"),
        log_path=log_path,
        stopped_early=stopped_early,
    )
