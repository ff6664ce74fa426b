"""The metrics a search can optimise: one registry that the runner, the CLI and the demo read.

Each :class:`Metric` row says its name, its direction, whether it needs
expected outputs, and how it is computed from the evaluator's batched
primitives (:mod:`autosteer.evaluator`).  A metric computes one
:class:`MetricResult` per candidate of a round (all candidates in one batched
pass where it can), each with the value and what was measured on every
prompt, so that a keep rule can test an improvement prompt by prompt.

Adding a metric: a function ``compute(evaluator, job) -> list[MetricResult]``
and one :func:`register` call.
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
