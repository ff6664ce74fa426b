"""What a search found, derived from its history: :class:`SteerResults`.

The runner, ``autosteer best`` and the demo all read a search's outcome the
same way, from the records alone (:func:`results_from_history`): the
baseline is the first record, the best is the newest keep (each keep beat
everything before it), the counts are counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autosteer.search.stats import paired_p
from autosteer.search.trial import TrialRecord, last_keep

__all__ = [
    "NO_STEERING_CODE",
    "SteerResults",
    "answer_axes",
    "describe_axes",
    "gain_confidence",
    "results_from_history",
    "trials_text",
]

NO_STEERING_CODE = "# no steering configuration beat the baseline"


def trials_text(iterations: int) -> str:
    """How ``autosteer best`` and the search viewer count a search's trials: ``"12 trials"``."""
    return f"{iterations} trials"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


class SteerResults(dict):
    """The outcome of a search: a dict with a readable ``str()``.

    Keys: ``baseline_score``, ``best_score``, ``best_candidate`` (a
    :class:`SteerCandidate`, or None when nothing beat the baseline),
    ``best_iteration`` (0 = the baseline), ``history`` (the
    :class:`~autosteer.search.trial.TrialRecord` s, baseline first; they read like
    dicts), ``keeps``, ``discards``, ``crashes``, ``iterations`` (trials run,
    baseline excluded), ``elapsed_s`` (over all sessions of a resumed run),
    ``best_steer_code`` (Python lines that rebuild the best configuration),
    ``baseline_holdout`` and ``best_holdout`` (None without holdout prompts),
    ``confidence`` (how sure the held-out gain is, see :func:`gain_confidence`;
    None without per-prompt held-out values), ``metric``, ``lower_is_better``,
    ``seed``, ``log_path``, ``stopped_early`` (None, or why the run ended
    before ``max_iterations``), ``prompt_alone`` (with system prompts in the
    space: the record of the best system prompt alone, no steering, which
    the best is reported beside; else None).  Keys also read as
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
        lines.extend(describe_axes(self))
        if self.get("prompt_alone") is not None:
            lines.append(describe_prompt_alone(self["prompt_alone"]))
        if self.get("confidence") is not None:
            lines.append(describe_confidence(self["confidence"]))
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


def gain_confidence(
    baseline: TrialRecord | None, best: TrialRecord | None, lower_is_better: bool
) -> dict[str, Any] | None:
    """How sure the best's held-out gain over the baseline is: a one-sided paired test on the
    per-prompt held-out values (the same prompts, unsteered vs best).

    Returns None when there is no best or no per-prompt held-out values for both; otherwise
    ``{"prompts", "better", "worse", "tied", "p_wilcoxon", "p_sign", "confidence"}`` where
    ``confidence`` is ``1 - p_wilcoxon``: 0.95 means a gain this consistent across prompts
    would arise by chance (with steering doing nothing) about 5% of the time.
    """
    if baseline is None or best is None or best is baseline:
        return None
    a, b = baseline.holdout_per_prompt, best.holdout_per_prompt
    if a is None or b is None or len(a) != len(b):
        return None
    sign = -1.0 if lower_is_better else 1.0
    diffs = [sign * (y - x) for x, y in zip(a, b)]
    p_w = paired_p(b, a, lower_is_better, "wilcoxon")
    return {
        "prompts": len(diffs),
        "better": sum(1 for d in diffs if d > 1e-12),
        "worse": sum(1 for d in diffs if d < -1e-12),
        "tied": sum(1 for d in diffs if abs(d) <= 1e-12),
        "p_wilcoxon": p_w,
        "p_sign": paired_p(b, a, lower_is_better, "sign"),
        "confidence": 1.0 - p_w,
    }


#: The axes of the answer objective (steered_answer) that the reports show, baseline and best.
AXES: tuple[str, ...] = (
    "concept_rate",
    "relevance",
    "on_request",
    "fluency_excess",
    "stuck",
    "success",
    "combined",
    "feasible",
)


def answer_axes(results: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]] | None:
    """The three axes (and the combined score) of the baseline and the best, on the search
    prompts and, where measured, the held-out ones: ``{"search"|"holdout": {"baseline"|"best":
    {axis: value}}}``; None when the metric does not measure them (only ``steered_answer`` does)."""
    history = results.get("history") or []
    if not history or "relevance" not in (history[0].details or {}):
        return None
    base = history[0]
    best = history[results.get("best_iteration") or 0]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, prefix in (("search", ""), ("holdout", "holdout_")):
        pair = {}
        for who, rec in (("baseline", base), ("best", best)):
            d = rec.details or {}
            row = {k: d[prefix + k] for k in AXES if prefix + k in d}
            if row:
                pair[who] = row
        if len(pair) == 2:
            out[split] = pair
    return out or None


def describe_axes(results: Mapping[str, Any]) -> list[str]:
    """One line per split: concept rate, relevance, fluency, stuck share and the share of answers
    good on all three, baseline -> best (empty for metrics without these axes)."""
    axes = answer_axes(results)
    if not axes:
        return []
    lines = []
    for split, pair in axes.items():
        a, b = pair["baseline"], pair["best"]

        def pct(k, a=a, b=b):
            return f"{100 * a.get(k, float('nan')):.0f}% -> {100 * b.get(k, float('nan')):.0f}%"

        lines.append(
            f"{'Search prompts' if split == 'search' else 'Held-out prompts'}: concept {pct('concept_rate')} | "
            f"relevance {a.get('relevance', float('nan')):.2f} -> {b.get('relevance', float('nan')):.2f} nat/token "
            f"(on request {pct('on_request')}) | fluency {a.get('fluency_excess', float('nan')):+.2f} -> "
            f"{b.get('fluency_excess', float('nan')):+.2f} nat/token vs unsteered | stuck {pct('stuck')} | "
            f"all three {pct('success')}"
        )
    return lines


def prompt_alone_record(history: Sequence[TrialRecord], lower_is_better: bool) -> TrialRecord | None:
    """The best scored record of a system prompt alone (no vectors), or None."""
    rows = [r for r in history if r.status in ("keep", "discard") and r.candidate.prompt_only and r.score is not None]
    if not rows:
        return None
    return (min if lower_is_better else max)(rows, key=lambda r: r.score)  # type: ignore[arg-type, return-value]


def describe_prompt_alone(rec: TrialRecord) -> str:
    """One line: prompting alone's score (search, held-out) and, for the answer objective, its
    held-out concept rate and share of answers good on all three axes."""
    d = rec.details or {}
    where = rec.candidate.prompt_role
    line = f"Prompting alone ({where} {rec.candidate.system!r}, iteration {rec.iteration}): {_fmt(rec.score)}"
    if rec.holdout_score is not None:
        line += f", held-out {_fmt(rec.holdout_score)}"
    if "holdout_success" in d:
        line += (
            f" | held-out concept {100 * d.get('holdout_concept_rate', float('nan')):.0f}%, "
            f"all three {100 * d['holdout_success']:.0f}%"
        )
    return line


def describe_confidence(conf: Mapping[str, Any]) -> str:
    """One line: ``Confidence of the held-out gain: 0.97 (better on 12, worse on 2, tied on 26 of 40
    prompts; one-sided Wilcoxon p = 0.03, sign test p = 0.006)``."""
    return (
        f"Confidence of the held-out gain: {conf['confidence']:.2f} (better on {conf['better']}, worse on "
        f"{conf['worse']}, tied on {conf['tied']} of {conf['prompts']} prompts; one-sided Wilcoxon "
        f"p = {conf['p_wilcoxon']:.3g}, sign test p = {conf['p_sign']:.3g})"
    )


def results_from_history(
    history: Sequence[TrialRecord],
    config: Mapping[str, Any] | None = None,
    *,
    log_path: str | None = None,
    stopped_early: str | None = None,
) -> SteerResults:
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
        confidence=gain_confidence(base, best, bool(config.get("lower_is_better", False))),
        metric=config.get("metric"),
        lower_is_better=config.get("lower_is_better"),
        seed=config.get("seed"),
        log_path=log_path,
        stopped_early=stopped_early,
        prompt_alone=prompt_alone_record(history, bool(config.get("lower_is_better", False))),
    )
