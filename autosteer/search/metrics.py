"""The metrics a search can optimise: objects that carry their own options.

A metric is an object: ``SteeredConcept(pattern=r"\\bwedding", fluency_margin=0.5)``,
``Perplexity()``, ``CustomMetric(fn)``.  Its options are declared once on its
class (:class:`~autosteer.search.options.Option`) and checked in its
constructor; the runner, the evaluator and ``autosteer search`` take the
object whole and never relay its options.  A name (``metric="perplexity"``)
is the metric with its defaults, and a callable is a :class:`CustomMetric`.

Each metric says its name, its direction, whether it needs expected outputs,
and how it is computed from the evaluator's batched primitives
(:mod:`autosteer.search.evaluator`).  It computes one :class:`MetricResult`
per candidate of a round (all candidates in one batched pass where it can),
each with the value and what was measured on every prompt, so that a keep
rule can test an improvement prompt by prompt.

Adding a metric: a :class:`Metric` subclass with ``name``, its ``options``
and ``compute(evaluator, job) -> list[MetricResult]``, decorated with
:func:`register`.

The concept metrics (a real model can always be steered into a concept by
turning it into gibberish, so a concept rate alone is no goal):

``concept_rate``   share of greedy continuations that match ``pattern``.
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
                   after each neutral prompt (``prompts``, default the search
                   prompts): how much the steering changes ordinary behaviour.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from autosteer._checks import check_real, check_str_list, is_real
from autosteer._checks import describe as _describe
from autosteer.errors import InvalidArgumentError
from autosteer.search.options import REQUIRED, Configurable, Option, make, non_negative_real, registrar

__all__ = [
    "DEFAULT_CONCEPT_METRIC",
    "METRICS",
    "REPETITION_LIMIT",
    "ConceptRate",
    "CustomMetric",
    "Fluency",
    "KLNeutral",
    "Metric",
    "MetricJob",
    "MetricResult",
    "Perplexity",
    "SteeredAnswer",
    "SteeredConcept",
    "TaskAccuracy",
    "as_metric",
    "compile_pattern",
    "concept_score",
    "get_metric",
    "metric_names",
    "normalize_answer",
    "register",
    "repetition",
]


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
    #: what :meth:`Metric.merge` joins (the metric's own per-prompt measurements); never logged
    parts: Any = field(default=None, compare=False, repr=False)


@dataclass
class MetricJob:
    """One evaluation: ``candidates`` (None: the model as it is) on ``prompts``.

    ``context`` and ``positions``: when ``prompts`` are part of a prompt set
    (a screening stage), the whole set and the position of each of
    ``prompts`` in it.  A metric that compares a prompt with the others of
    its set, or measures a reference on the set, takes them from the whole
    set, so that each prompt's values do not depend on which part was scored.
    """

    prompts: list[Any]
    expected: list[str] | None
    candidates: Sequence[Any] | None = None
    steer: Any = None
    context: list[Any] | None = None
    positions: tuple[int, ...] | None = None

    @property
    def groups(self) -> int:
        return 1 if self.candidates is None else len(self.candidates)

    @property
    def all_prompts(self) -> list[Any]:
        """The whole prompt set ``prompts`` belong to."""
        return self.prompts if self.context is None else self.context

    @property
    def where(self) -> Sequence[int]:
        """The position of each of ``prompts`` in :attr:`all_prompts`."""
        return range(len(self.prompts)) if self.positions is None else self.positions

    @property
    def whole(self) -> bool:
        """Whether the job scores its whole prompt set."""
        return self.context is None


class Metric(Configurable):
    """Base class of the metrics: a name, a direction, and options declared in :attr:`options`.

    Class attributes: ``lower_is_better`` (the metric's direction; None: the
    user's ``lower_is_better`` decides, default False), ``expected``
    ("required", "optional" or "unused": the expected outputs), ``summary``
    (one line that says what it measures), ``batched`` (whether several
    candidates share one batched pass; otherwise they are evaluated one after
    another), ``mergeable`` (whether results on consecutive parts of a prompt
    set join, by :meth:`merge`, into exactly the result on the whole set: what
    a keep rule's ``screen`` needs), ``score_from_values`` (how the value
    derives from the per-prompt values, which the log reader checks: ``"mean"``,
    ``"within"`` (between the smallest and the largest; perplexity, a
    token-weighted figure) or None (not checked)).  Subclasses implement
    :meth:`compute`.
    """

    kind: ClassVar[str] = "metric"
    lower_is_better: ClassVar[bool | None] = None
    expected: ClassVar[str] = "unused"
    summary: ClassVar[str] = ""
    batched: ClassVar[bool] = True
    score_from_values: ClassVar[str | None] = "mean"
    mergeable: ClassVar[bool] = False

    def compute(self, evaluator: Any, job: MetricJob) -> list[MetricResult]:
        """One :class:`MetricResult` per candidate group of ``job``, from ``evaluator``'s passes."""
        raise NotImplementedError

    def merge(self, results: Sequence[MetricResult]) -> MetricResult:
        """The result on a prompt set from the results on consecutive parts of it, in prompt order
        (each from a :class:`MetricJob` with the set as ``context``), equal to scoring the whole set.

        The default suits a metric whose value is the mean of its per-prompt values and which
        reports no details; a mergeable metric that differs overrides it.
        """
        if not self.mergeable:
            raise InvalidArgumentError(f"metric {self.name!r} cannot join results on parts of a prompt set")
        values = tuple(v for r in results for v in r.per_prompt or ())
        outputs = None if results[0].outputs is None else tuple(t for r in results for t in r.outputs or ())
        return MetricResult(sum(values) / len(values), values, outputs)

    def check(self, evaluator: Any) -> None:
        """Checks that need the evaluator (e.g. its ``chat`` setting); called once by it."""


#: name -> Metric class; :func:`register` adds a row.
METRICS: dict[str, type[Metric]] = {}


def _check_metric_class(cls: type[Metric]) -> None:
    if cls.expected not in ("required", "optional", "unused"):
        raise InvalidArgumentError(f"{cls.__name__}.expected must be required/optional/unused, got {cls.expected!r}")


#: Class decorator: add a :class:`Metric` subclass to :data:`METRICS` under its name (which must be new).
register = registrar("metric", METRICS, _check_metric_class)


def metric_names() -> tuple[str, ...]:
    return tuple(METRICS)


def as_metric(value: Any) -> Metric:
    """``value`` as a :class:`Metric`: an object as it is, a name with its defaults, a callable
    as ``CustomMetric(value)``."""
    if callable(value) and not isinstance(value, (str, type, Metric)):
        return CustomMetric(value)
    return make("metric", METRICS, Metric, value)


#: The former name of :func:`as_metric`.
get_metric = as_metric


def normalize_answer(text: str) -> str:
    """Lower-case and collapse every run of whitespace to one space (ends stripped)."""
    return " ".join(text.lower().split())


def compile_pattern(pattern: Any, name: str = "pattern") -> re.Pattern:
    """A case-insensitive regular expression from a pattern string or a list of keywords
    (each matched as written, anywhere: "marri" matches "married"); a compiled pattern as it is."""
    if isinstance(pattern, re.Pattern):
        return pattern
    if isinstance(pattern, str):
        if not pattern.strip():
            raise InvalidArgumentError(f"{name} is empty")
        try:
            return re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise InvalidArgumentError(f"{name} {pattern!r} is not a valid regular expression: {exc}") from None
    if isinstance(pattern, (list, tuple)):
        keywords = check_str_list(name, pattern, allow_empty=False)
        for i, kw in enumerate(keywords):
            if not kw.strip():
                raise InvalidArgumentError(f"{name}[{i}] is an empty keyword")
        return re.compile("|".join(re.escape(kw) for kw in keywords), re.IGNORECASE)
    raise InvalidArgumentError(
        f"{name} must be a regular expression or a non-empty list of keywords, got {_describe(pattern)}"
    )


def _check_concept(name: str, value: Any) -> Any:
    """A compiled pattern (from a regex or keywords), or a callable ``answer -> [0, 1]`` as it is."""
    if callable(value) and not isinstance(value, (str, re.Pattern)):
        return value
    return compile_pattern(value, name)


def concept_score(concept: Any, text: str) -> float:
    """How much ``text`` shows the concept, in [0, 1]: 1/0 for a pattern, or the callable's value
    (a bool counts as 1/0)."""
    if isinstance(concept, re.Pattern):
        return 1.0 if concept.search(text) else 0.0
    value = concept(text)
    if not is_real(value) and not isinstance(value, bool):
        raise TypeError(f"the concept callable must return a number in [0, 1] or a bool, got {_describe(value)}")
    return min(1.0, max(0.0, float(value)))


def _label(value: Any) -> Any:
    """What a run's fingerprint records of a pattern (its text) or a callable (its qualified name)."""
    if value is None:
        return None
    if isinstance(value, re.Pattern):
        return value.pattern
    return "callable:" + getattr(value, "__module__", "?") + "." + getattr(value, "__qualname__", type(value).__name__)


def _check_judge(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise InvalidArgumentError(
            f"{name} must be a callable (request, answer) -> score in [0, 1], got {_describe(value)}"
        )
    return value


def _check_topic(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(
            f"{name} must be a non-empty request for the concept itself (e.g. 'Tell me about weddings.') or None, "
            f"got {_describe(value)}"
        )
    return value


def _positive_real(name: str, value: Any) -> float:
    value = check_real(name, value, minimum=0.0)
    if value <= 0.0:
        raise InvalidArgumentError(f"{name} must be > 0, got {value!r}")
    return value


def _check_fn(name: str, fn: Any) -> Callable:
    if not callable(fn):
        raise InvalidArgumentError(
            f"{name} must be a callable (model, tokenizer, prompts) -> float; got {_describe(fn)}"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn  # a builtin without a signature: trust it
    try:
        sig.bind(None, None, [])
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must take three arguments (model, tokenizer, prompts); {getattr(fn, '__name__', fn)!r} "
            f"has the signature {sig}"
        ) from None
    return fn


def _check_neutral_prompts(name: str, prompts: Any) -> list | None:
    if prompts is None:
        return None
    from autosteer.search.evaluator import check_prompts

    return check_prompts(prompts, name, chat=True)


def _digest(value: Any) -> Any:
    from autosteer._canonical import digest

    return None if value is None else digest(value)


#: The concept, shared by the concept metrics: a regex, keywords, or a callable answer -> [0, 1].
PATTERN = Option(
    "pattern",
    REQUIRED,
    "the concept: a regular expression (or keywords, or in Python a callable answer -> [0, 1]) that "
    "an on-concept continuation matches (case-insensitive)",
    check=_check_concept,
    parse=str,
    metavar="REGEX",
    flag="--concept-pattern",
    fingerprint=_label,
)
#: The fluency budget of ``steered_concept``.
FLUENCY_MARGIN = Option(
    "fluency_margin",
    1.0,
    "fluency budget in nats/token above the unsteered model's own answers (steered_answer: "
    "a hard constraint; steered_concept: a penalty)",
    check=non_negative_real,
    parse=float,
    metavar="NATS",
)


# --------------------------------------------------------------------------- built-in metrics


@register
class TaskAccuracy(Metric):
    """Share of prompts whose greedy continuation contains the expected string (``"task_accuracy"``).

    Case and spacing are ignored (:func:`normalize_answer`).  Needs one
    expected output per prompt; takes no option.
    """

    name = "task_accuracy"
    lower_is_better = False
    expected = "required"
    summary = "share of prompts whose greedy continuation contains the expected string (case and spacing ignored)"
    mergeable = True

    def compute(self, ev, job: MetricJob) -> list[MetricResult]:
        if job.expected is None:
            raise InvalidArgumentError("task_accuracy needs expected_outputs (one expected string per prompt)")
        wanted = [normalize_answer(e) for e in job.expected]
        groups = ev.generate_groups(job, stop_when=wanted)
        out = []
        for texts in groups:
            hits = tuple(1.0 if w in normalize_answer(t) else 0.0 for t, w in zip(texts, wanted))
            out.append(MetricResult(sum(hits) / len(hits), hits, tuple(texts)))
        return out


@register
class Perplexity(Metric):
    """exp of the mean per-token NLL over all scored tokens (``"perplexity"``; lower is better).

    With expected outputs, the tokens of each expected text given its prompt
    are scored; without, every token of the prompt after the first.  The
    per-prompt values are each prompt's own perplexity.  Takes no option.
    """

    score_from_values = "within"  # exp of the token-weighted mean NLL: between the per-prompt values
    name = "perplexity"
    lower_is_better = True
    expected = "optional"
    summary = "exp of the mean per-token NLL (of the expected text given its prompt, when given)"

    mergeable = True

    def compute(self, ev, job: MetricJob) -> list[MetricResult]:
        return [self._result(tuple(rows)) for rows in ev.nll_groups(job)]

    def merge(self, results: Sequence[MetricResult]) -> MetricResult:
        """Token-weighted: the summed NLLs and token counts of the parts, not their perplexities."""
        return self._result(tuple(row for r in results for row in r.parts))

    @staticmethod
    def _result(rows: tuple[tuple[float, int], ...]) -> MetricResult:
        total = sum(s for s, _ in rows)
        count = sum(n for _, n in rows)
        if count == 0:
            raise InvalidArgumentError("no token to score: every text is a single token")
        per_prompt = tuple(math.exp(s / n) for s, n in rows)
        return MetricResult(math.exp(total / count), per_prompt, parts=rows)


@register
class CustomMetric(Metric):
    """Your own function of the (steered) model: ``CustomMetric(fn)`` (``"custom"``).

    ``fn(model, tokenizer, prompts)`` returns a number, or one number per
    prompt (then the value is their mean and a paired keep rule can use
    them).  Its direction is the runner's ``lower_is_better`` (default
    False).  Candidates are scored one after another, the model steered by
    each in turn.  A plain callable given as ``metric=`` is this metric.
    """

    name = "custom"
    lower_is_better = None
    expected = "unused"
    summary = "fn(model, tokenizer, prompts) -> a number (or one number per prompt)"
    batched = False
    options = (
        Option(
            "fn",
            REQUIRED,
            "the function (model, tokenizer, prompts) -> a number or one per prompt",
            check=_check_fn,
            fingerprint=False,
        ),
    )
    fn: Callable[..., Any]

    def __init__(self, fn: Callable[[Any, Any, list], Any]) -> None:
        super().__init__(fn=fn)

    def compute(self, ev, job: MetricJob) -> list[MetricResult]:
        return [ev.call_custom(self.fn, job)]


#: A continuation whose share of repeated 3-token windows exceeds this does not count as
#: on-concept for ``steered_concept`` (unsteered SmolLM2 answers peak at 0.26; a stuck
#: "wedding wedding wedding" is near 1 and scores as fluent under an NLL criterion).
REPETITION_LIMIT = 0.3


def repetition(ids: Sequence[int]) -> float:
    """Share of a continuation's 3-token windows that repeat an earlier window (0 for < 3 tokens)."""
    windows = [tuple(ids[i : i + 3]) for i in range(len(ids) - 2)]
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


@register
class ConceptRate(Metric):
    """Share of greedy continuations that match ``pattern`` (``"concept_rate"``).

    ``ConceptRate(pattern=r"\\bwedding")``: ``pattern`` is a regular
    expression or a list of keywords, matched case-insensitively anywhere.
    """

    name = "concept_rate"
    lower_is_better = False
    summary = "share of greedy continuations that match the concept pattern (a regex or keywords, case-insensitive)"
    mergeable = True
    options = (PATTERN,)
    pattern: Any  # a compiled pattern or a callable answer -> [0, 1] (see _check_concept)

    def compute(self, ev, job: MetricJob) -> list[MetricResult]:
        texts, _ = ev.generate_with_ids(job, early_stop=False)
        out = []
        for group in texts:
            hits = tuple(1.0 if concept_score(self.pattern, t) >= 0.5 else 0.0 for t in group)
            out.append(MetricResult(sum(hits) / len(hits), hits, tuple(group)))
        return out


@register
class Fluency(Metric):
    """Mean per-token NLL of each greedy continuation under the unsteered model (``"fluency"``).

    In nats/token, lower is better: the continuation is generated steered and
    scored with every AutoSteer hook off.  Takes no option.
    """

    name = "fluency"
    lower_is_better = True
    summary = "mean over prompts of each greedy continuation's per-token NLL under the unsteered model (nats/token)"
    mergeable = True

    def compute(self, ev, job: MetricJob) -> list[MetricResult]:
        texts, ids = ev.generate_with_ids(job, early_stop=False)
        nll = ev.continuation_nll(job.prompts, ids)
        return [MetricResult(sum(n) / len(n), tuple(n), tuple(t)) for n, t in zip(nll, texts)]


@register
class SteeredConcept(Metric):
    """The concept objective (``"steered_concept"``): on-concept, not stuck, within a fluency budget.

    ``SteeredConcept(pattern=..., fluency_margin=1.0)``; per prompt
    ``[match and repetition <= 0.3] - max(0, F - F0 - fluency_margin)``,
    averaged (see the module docstring).  Details: ``concept_rate``,
    ``fluency``, ``fluency_reference``, ``fluency_excess``, ``repetitive``.
    """

    name = "steered_concept"
    lower_is_better = False
    summary = (
        "mean over prompts of [continuation matches the pattern and repeats at most 30% of its 3-token "
        "windows] - max(0, fluency - unsteered fluency - fluency_margin)"
    )
    options = (PATTERN, FLUENCY_MARGIN)
    pattern: Any
    fluency_margin: float

    mergeable = True

    def compute(self, ev, job: MetricJob) -> list[MetricResult]:
        texts, ids = ev.generate_with_ids(job, early_stop=False)
        nll = ev.continuation_nll(job.prompts, ids)
        if job.candidates is None and job.whole and not _steered(ev.model):
            ev.remember_reference(job.prompts, nll[0])  # this is the unsteered model's own output
        _, reference = ev.unsteered_reference(job.all_prompts)  # per prompt, measured on the whole set
        out = []
        for group_texts, group_ids, group_nll in zip(texts, ids, nll):
            # per prompt: (matched, counted, NLL, the unsteered answer's NLL)
            parts = tuple(
                (m, m and repetition(i) <= REPETITION_LIMIT, x, reference[p])
                for m, i, x, p in zip(
                    (concept_score(self.pattern, t) >= 0.5 for t in group_texts), group_ids, group_nll, job.where
                )
            )
            out.append(self._result(parts, tuple(group_texts)))
        return out

    def merge(self, results: Sequence[MetricResult]) -> MetricResult:
        """The fluency penalty is a set-level term: recomputed on the joined prompts."""
        return self._result(
            tuple(x for r in results for x in r.parts), tuple(t for r in results for t in r.outputs or ())
        )

    def _result(self, parts: tuple, texts: tuple[str, ...]) -> MetricResult:
        matched = [m for m, _, _, _ in parts]
        counted = [c for _, c, _, _ in parts]
        nll = [x for _, _, x, _ in parts]
        ref = [r for _, _, _, r in parts]
        fluency = sum(nll) / len(nll)
        reference = sum(ref) / len(ref)
        penalty = max(0.0, fluency - reference - self.fluency_margin)
        per_prompt = tuple((1.0 if c else 0.0) - penalty for c in counted)
        return MetricResult(
            sum(per_prompt) / len(per_prompt),
            per_prompt,
            texts,
            details={
                "concept_rate": sum(matched) / len(matched),
                "fluency": fluency,
                "fluency_reference": reference,
                "fluency_excess": fluency - reference,
                "repetitive": sum(m and not c for m, c in zip(matched, counted)) / len(matched),
            },
            parts=parts,
        )


@register
class SteeredAnswer(Metric):
    """The default objective of a concept search (``"steered_answer"``): on-concept AND on-request AND fluent.

    ``SteeredAnswer(pattern=..., fluency_margin=1.0, fluency_scale=3.0, relevance_judge=None,
    topic_request=None)``:
    per prompt the harmonic mean of the concept, relevance and fluency scores
    (0 when the answer is stuck), with the fluency budget ``fluency_margin`` as
    a hard constraint; ``fluency_scale`` is the excess NLL (nat/token) at which
    an answer's fluency score reaches 0, and ``relevance_judge(request,
    answer) -> [0, 1]`` may replace the relevance measure.  ``topic_request``
    (e.g. "Tell me about weddings."): relevance is also taken against this
    request, so an answer more about the topic than about its request scores
    low.  It separates drifted answers better answer by answer, but searches
    with it on SmolLM2 did no better, rather worse (docs/search-real.md), so it is
    not the default.
    See :mod:`autosteer.search.objective` for the formulas.
    """

    name = "steered_answer"
    lower_is_better = False
    summary = (
        "per prompt, the harmonic mean of concept (pattern), relevance (answer|own request vs other requests, "
        "unsteered) and fluency scores, 0 when stuck; over the fluency budget: minus the overrun "
        "(a hard constraint)"
    )
    options = (
        PATTERN,
        FLUENCY_MARGIN,
        Option(
            "fluency_scale",
            3.0,
            "excess NLL (nats/token) at which an answer's fluency score reaches 0",
            check=_positive_real,
            parse=float,
            metavar="NATS",
        ),
        Option(
            "relevance_judge",
            None,
            "a callable (request, answer) -> [0, 1] replacing the relevance measure",
            check=_check_judge,
            fingerprint=_label,
        ),
        Option(
            "topic_request",
            None,
            "a plain request for the concept (e.g. 'Tell me about weddings.'): relevance is also taken against it",
            check=_check_topic,
            parse=str,
            metavar="TEXT",
        ),
    )
    pattern: Any
    fluency_margin: float
    fluency_scale: float
    relevance_judge: Callable[[Any, str], float] | None
    topic_request: str | None

    mergeable = True

    def compute(self, ev, job: MetricJob) -> list[MetricResult]:
        from autosteer.search.objective import answer_scores

        texts, ids = ev.generate_with_ids(job, early_stop=False)
        scores = answer_scores(
            ev,
            job.prompts,
            texts,
            ids,
            concept=lambda t: concept_score(self.pattern, t),
            judge=self.relevance_judge,
            margin=self.fluency_margin,
            fluency_scale=self.fluency_scale,
            unsteered=job.candidates is None and job.whole and not _steered(ev.model),
            context=job.context,
            positions=job.positions,
            topic=self.topic_request,
        )
        return [_answer_result(s, tuple(t)) for s, t in zip(scores, texts)]

    def merge(self, results: Sequence[MetricResult]) -> MetricResult:
        """Per-prompt scores joined; feasibility and the details recomputed on the joined prompts."""
        from autosteer.search.objective import join_scores

        return _answer_result(
            join_scores([r.parts for r in results]), tuple(t for r in results for t in r.outputs or ())
        )


def _answer_result(scores: Any, texts: tuple[str, ...]) -> MetricResult:
    return MetricResult(scores.value(), scores.per_prompt(), texts, details=scores.details(), parts=scores)


#: The metric of a concept search when none is named (``autosteer search --concept-pattern``).
DEFAULT_CONCEPT_METRIC = "steered_answer"


@register
class KLNeutral(Metric):
    """Mean KL(steered || unsteered) of the next-token distribution after neutral prompts (``"kl_neutral"``).

    ``KLNeutral(prompts=None)``: the neutral prompts (None: the search
    prompts).  A side-effect measure: how much the steering changes ordinary
    behaviour; lower is better.
    """

    name = "kl_neutral"
    lower_is_better = True
    summary = (
        "mean KL(steered || unsteered) of the next-token distribution after each neutral prompt (a side-effect measure)"
    )
    options = (
        Option(
            "prompts",
            None,
            "the neutral prompts (None: the search prompts)",
            check=_check_neutral_prompts,
            fingerprint=_digest,
        ),
    )
    prompts: list | None

    def check(self, evaluator: Any) -> None:
        if self.prompts is not None and not evaluator.chat:
            from autosteer.search.evaluator import check_prompts

            check_prompts(self.prompts, "KLNeutral prompts", chat=False)

    def compute(self, ev, job: MetricJob) -> list[MetricResult]:
        import torch

        from autosteer.steering.steer import steering_paused

        prompts = self.prompts or job.prompts
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
