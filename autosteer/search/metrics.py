"""The metrics a search can optimise: one registry that the runner, the CLI and the demo read.

Each :class:`Metric` row says its name, its direction, whether it needs
expected outputs, and how it is computed from the evaluator's batched
primitives (:mod:`autosteer.search.evaluator`).  A metric computes one
:class:`MetricResult` per candidate of a round (all candidates in one batched
pass where it can), each with the value and what was measured on every
prompt, so that a keep rule can test an improvement prompt by prompt.

Adding a metric: a function ``compute(evaluator, job) -> list[MetricResult]``
and one :func:`register` call.

The concept metrics (a real model can always be steered into a concept by
turning it into gibberish, so a concept rate alone is no goal):

``concept_rate``   share of greedy continuations that match ``concept_pattern``.
``fluency``        mean over prompts of each continuation's per-token NLL under
                   the *unsteered* model (every AutoSteer hook off for that
                   scoring pass), in nats/token; lower is better.
``steered_concept`` the number to optimise:
                   ``mean_p [match_p and rep3_p <= 0.3] - max(0, F - F0 - margin)``
                   where ``match_p`` is the pattern test of prompt p's
                   continuation, ``rep3_p`` its share of repeated 3-token
                   windows, ``F`` the candidate's fluency, ``F0`` the unsteered
                   model's fluency on its own continuations of the same prompts,
                   and ``margin`` the ``fluency_margin`` (default 1.0 nat/token).
                   Within the fluency budget it is the (repetition-guarded)
                   concept rate; each nat/token beyond it costs as much as the
                   whole rate.  A per-continuation gate was tried first and
                   measured unusable on SmolLM2: an on-topic answer costs about 2
                   nats/token under the unsteered scorer whatever its quality,
                   so a margin of 1 let only 10-20% of on-topic answers count.
``steered_answer`` the default objective of a concept search: per prompt, the
                   answer must be on-concept AND on-request AND fluent to score
                   (harmonic mean of the three, 0 when stuck), with the fluency
                   budget as a hard constraint; see :mod:`autosteer.search.objective`.
                   ``steered_concept`` is the objective before it, kept as it was.
``kl_neutral``     mean KL(steered || unsteered) of the next-token distribution
                   after each neutral prompt (``kl_prompts``, default the
                   prompts): how much the steering changes ordinary behaviour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from autosteer.errors import InvalidArgumentError

__all__ = ["Metric", "MetricResult", "MetricJob", "METRICS", "register", "get_metric", "metric_names",
           "normalize_answer"]


@dataclass(frozen=True)
class MetricResult:
    """What one metric measured for one candidate.

    ``value``: the score the search compares.  ``per_prompt``: one value per
    prompt, in the metric's own direction (None when the metric cannot say,
    e.g. a custom function that returns one number).  ``outputs``: the
    generated continuations, for metrics that generate.  ``details``: extra
    named measurements (e.g. the fluency beside a concept rate).
    """

    value: float
    per_prompt: tuple[float, ...] | None = None
    outputs: tuple[str, ...] | None = None
    details: dict[str, float] = field(default_factory=dict)


@dataclass
class MetricJob:
    """One evaluation: ``candidates`` (None: the model as it is) on ``prompts``."""

    prompts: list[Any]
    expected: list[str] | None
    candidates: Sequence[Any] | None = None
    steer: Any = None

    @property
    def groups(self) -> int:
        return 1 if self.candidates is None else len(self.candidates)


@dataclass(frozen=True)
class Metric:
    """One row of the registry.

    ``lower_is_better``: the metric's direction (None: the user's
    ``lower_is_better`` decides, default False).  ``expected``: "required",
    "optional" or "unused".  ``batched``: whether several candidates share
    one batched pass (otherwise they are evaluated one after another).
    """

    name: str
    lower_is_better: bool | None
    expected: str
    summary: str
    compute: Callable[[Any, MetricJob], list[MetricResult]]
    batched: bool = True
    needs_pattern: bool = False
    generates: bool = False


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to the registry (its name must be new)."""
    if metric.name in METRICS:
        raise InvalidArgumentError(f"a metric named {metric.name!r} is already registered")
    if metric.expected not in ("required", "optional", "unused"):
        raise InvalidArgumentError(f"Metric.expected must be required/optional/unused, got {metric.expected!r}")
    METRICS[metric.name] = metric
    return metric


def metric_names() -> tuple[str, ...]:
    return tuple(METRICS)


def get_metric(name: Any) -> Metric:
    if not isinstance(name, str) or name not in METRICS:
        raise InvalidArgumentError(f"unknown metric {name!r}; expected one of {', '.join(map(repr, METRICS))}")
    return METRICS[name]


def normalize_answer(text: str) -> str:
    """Lower-case and collapse every run of whitespace to one space (ends stripped)."""
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------- built-in metrics


def _task_accuracy(ev, job: MetricJob) -> list[MetricResult]:
    wanted = [normalize_answer(e) for e in job.expected]
    groups = ev.generate_groups(job, stop_when=wanted)
    out = []
    for texts in groups:
        hits = tuple(1.0 if w in normalize_answer(t) else 0.0 for t, w in zip(texts, wanted))
        out.append(MetricResult(sum(hits) / len(hits), hits, tuple(texts)))
    return out


def _perplexity(ev, job: MetricJob) -> list[MetricResult]:
    out = []
    for rows in ev.nll_groups(job):
        total = sum(s for s, _ in rows)
        count = sum(n for _, n in rows)
        if count == 0:
            raise InvalidArgumentError("no token to score: every text is a single token")
        per_prompt = tuple(math.exp(s / n) for s, n in rows)
        out.append(MetricResult(math.exp(total / count), per_prompt))
    return out


def _custom(ev, job: MetricJob) -> list[MetricResult]:
    return [ev.call_custom(job)]


#: A continuation whose share of repeated 3-token windows exceeds this does not count as
#: on-concept for ``steered_concept`` (unsteered SmolLM2 answers peak at 0.26; a stuck
#: "wedding wedding wedding" is near 1 and scores as fluent under an NLL criterion).
REPETITION_LIMIT = 0.3


def repetition(ids: Sequence[int]) -> float:
    """Share of a continuation's 3-token windows that repeat an earlier window (0 for < 3 tokens)."""
    windows = [tuple(ids[i:i + 3]) for i in range(len(ids) - 2)]
    if not windows:
        return 0.0
    seen: set = set()
    repeated = 0
    for w in windows:
        if w in seen:
            repeated += 1
        seen.add(w)
    return repeated / len(windows)


def _steered(model) -> bool:
    from autosteer.steering.steer import is_steered

    return is_steered(model)


def _concept_rate(ev, job: MetricJob) -> list[MetricResult]:
    texts, _ = ev.generate_with_ids(job, early_stop=False)
    out = []
    for group in texts:
        hits = tuple(1.0 if ev.concept_score(t) >= 0.5 else 0.0 for t in group)
        out.append(MetricResult(sum(hits) / len(hits), hits, tuple(group)))
    return out


def _fluency(ev, job: MetricJob) -> list[MetricResult]:
    texts, ids = ev.generate_with_ids(job, early_stop=False)
    nll = ev.continuation_nll(job.prompts, ids)
    return [MetricResult(sum(n) / len(n), tuple(n), tuple(t)) for n, t in zip(nll, texts)]


def _steered_concept(ev, job: MetricJob) -> list[MetricResult]:
    texts, ids = ev.generate_with_ids(job, early_stop=False)
    nll = ev.continuation_nll(job.prompts, ids)
    if job.candidates is None and not _steered(ev.model):
        ev.remember_reference(job.prompts, nll[0])  # this is the unsteered model's own output
    reference, _ = ev.unsteered_reference(job.prompts)
    out = []
    for group_texts, group_ids, group_nll in zip(texts, ids, nll):
        fluency = sum(group_nll) / len(group_nll)
        penalty = max(0.0, fluency - reference - ev.fluency_margin)
        matched = [ev.concept_score(t) >= 0.5 for t in group_texts]
        counted = [m and repetition(i) <= REPETITION_LIMIT for m, i in zip(matched, group_ids)]
        per_prompt = tuple((1.0 if c else 0.0) - penalty for c in counted)
        out.append(MetricResult(
            sum(per_prompt) / len(per_prompt), per_prompt, tuple(group_texts),
            details={"concept_rate": sum(matched) / len(matched), "fluency": fluency,
                     "fluency_reference": reference, "fluency_excess": fluency - reference,
                     "repetitive": sum(m and not c for m, c in zip(matched, counted)) / len(matched)},
        ))
    return out


def _steered_answer(ev, job: MetricJob) -> list[MetricResult]:
    from autosteer.search.objective import answer_scores

    texts, ids = ev.generate_with_ids(job, early_stop=False)
    scores = answer_scores(ev, job.prompts, texts, ids, concept=ev.concept_score, judge=ev.relevance_judge,
                           margin=ev.fluency_margin, fluency_scale=ev.fluency_scale,
                           unsteered=job.candidates is None and not _steered(ev.model))
    return [MetricResult(s.value(), s.per_prompt(), tuple(t), details=s.details()) for s, t in zip(scores, texts)]


def _kl_neutral(ev, job: MetricJob) -> list[MetricResult]:
    import torch

    from autosteer.steering.steer import steering_paused

    prompts = ev.kl_prompts or job.prompts
    neutral = MetricJob(list(prompts), None, job.candidates, job.steer)
    steered = ev.next_token_logprobs(neutral)
    with steering_paused(ev.model):
        (plain,) = ev.next_token_logprobs(MetricJob(list(prompts), None))
    out = []
    for logp in steered:
        kl = (logp.exp() * (logp - plain)).sum(dim=-1).clamp_min(0.0).double()
        per_prompt = tuple(float(x) for x in kl)
        out.append(MetricResult(float(torch.tensor(per_prompt).mean()), per_prompt))
    return out


register(Metric(
    "task_accuracy", False, "required",
    "share of prompts whose greedy continuation contains the expected string (case and spacing ignored)",
    _task_accuracy, generates=True,
))
register(Metric(
    "perplexity", True, "optional",
    "exp of the mean per-token NLL (of the expected text given its prompt, when given)",
    _perplexity,
))
register(Metric(
    "custom", None, "unused",
    "custom_fn(model, tokenizer, prompts) -> a number (or one number per prompt)",
    _custom, batched=False,
))
register(Metric(
    "concept_rate", False, "unused",
    "share of greedy continuations that match concept_pattern (a regex or keywords, case-insensitive)",
    _concept_rate, needs_pattern=True, generates=True,
))
register(Metric(
    "fluency", True, "unused",
    "mean over prompts of each greedy continuation's per-token NLL under the unsteered model (nats/token)",
    _fluency, generates=True,
))
register(Metric(
    "steered_concept", False, "unused",
    "mean over prompts of [continuation matches concept_pattern and repeats at most 30% of its 3-token "
    "windows] - max(0, fluency - unsteered fluency - fluency_margin)",
    _steered_concept, needs_pattern=True, generates=True,
))
register(Metric(
    "steered_answer", False, "unused",
    "per prompt, the harmonic mean of concept (pattern), relevance (answer|own request vs other requests, "
    "unsteered) and fluency scores, 0 when stuck; over the fluency budget: minus the overrun (a hard constraint)",
    _steered_answer, needs_pattern=True, generates=True,
))
register(Metric(
    "kl_neutral", True, "unused",
    "mean KL(steered || unsteered) of the next-token distribution after each neutral prompt (a side-effect measure)",
    _kl_neutral,
))
