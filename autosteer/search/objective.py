"""The answer objective of a concept search: on-concept AND on-request AND fluent, per prompt.

A real model can always be steered into a concept by making it stop answering
(measured on SmolLM2: a search for the concept rate alone reached 92% on-topic
answers, of which about half no longer addressed their request).  So every
steered answer is scored on three axes, as AxBench does (Wu et al. 2025), and
the axes are combined per prompt so that an answer scores only when it is good
on all three:

concept ``c_p``
    1 when the answer matches the concept pattern, else 0 (a user callable
    ``answer -> [0, 1]`` may replace the pattern).
relevance ``ρ_p`` (nat/token)
    ``ℓ(a_p | x_p) - mean_q ℓ(a_p | x_q)``: the mean per-token log-probability
    of the answer given its own request minus given other requests of the set
    (the next ``RELEVANCE_OTHERS`` prompts, cyclically), both under the
    *unsteered* model: a pointwise mutual information, how much the answer is
    about its request.  Its score is ``r_p = clip(ρ_p / ρ_0, 0, 1)`` where
    ``ρ_0`` is the mean relevance of the unsteered model's own answers to the
    same prompts (floored at ``RELEVANCE_FLOOR``).  With a *topic request*
    ``t`` (a plain request for the concept, e.g. "Tell me about weddings."),
    ``ρ_p = min(ℓ(a_p | x_p) - mean_q ℓ(a_p | x_q), ℓ(a_p | x_p) - ℓ(a_p | t))``:
    the answer must also be more about its request than about the topic (the
    same formula gives ``ρ_0``).  A user judge ``(request, answer) -> [0, 1]``
    may replace ``r_p``.
fluency ``e_p`` (nat/token)
    the answer's mean per-token NLL under the unsteered model minus ``F_0p``,
    the same for the unsteered model's own (greedy) answer to the same prompt.
    Its score is ``f_p = clip(1 - max(0, e_p) / fluency_scale, 0, 1)``; the
    unsteered answer scores 1.
stuck ``s_p``
    more than ``REPETITION_LIMIT`` of the answer's 3-token windows repeat an
    earlier one.

Per prompt: ``q_p = 0`` if ``s_p``, else the harmonic mean
``3 / (1/c_p + 1/r_p + 1/f_p)`` (0 when any of the three is 0).

The fluency budget is a constraint, not a penalty: with ``F`` the mean NLL of
the candidate's answers and ``F_0`` the mean of the ``F_0p``, a candidate is
*feasible* when ``F - F_0 <= margin``.
A feasible candidate scores ``Q = mean_p q_p`` (in [0, 1]); an infeasible one
scores ``-(F - F_0 - margin)`` on every prompt, below every feasible
candidate and below the unsteered model (which is feasible by definition), so
no trade of fluency for concept can make it the best.  The runner also
refuses, as its result, a keep whose *held-out* answers are over the budget
(see :class:`~autosteer.search.runner.AutoSteerRunner`).

:func:`answer_scores` computes all of this for the candidate groups of one
evaluation from the evaluator's batched primitives; :func:`combine` and
:func:`relevance_others` are the pure formulas (the unit tests check them
against hand computations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FLUENCY_SCALE",
    "ON_REQUEST",
    "RELEVANCE_FLOOR",
    "RELEVANCE_OTHERS",
    "AnswerScores",
    "answer_scores",
    "combine",
    "join_scores",
    "relevance_others",
]

#: How many other requests each answer is scored against for its relevance.
RELEVANCE_OTHERS = 2
#: The smallest reference relevance ``ρ_0`` (nat/token) a score is divided by.
RELEVANCE_FLOOR = 0.1
#: Default ``fluency_scale``: nats/token of excess NLL at which an answer's fluency score reaches 0.
FLUENCY_SCALE = 3.0
#: An answer counts as "on request" in the reported shares when ``r_p`` is at least this.
ON_REQUEST = 0.5


def relevance_others(n: int, k: int = RELEVANCE_OTHERS) -> list[list[int]]:
    """For each of ``n`` prompts, the indexes of the ``min(k, n - 1)`` prompts that follow it
    (cyclically): the "other requests" its answer is scored against."""
    k = min(k, n - 1)
    return [[(p + j) % n for j in range(1, k + 1)] for p in range(n)]


def combine(concept: float, relevance: float, fluency: float, stuck: bool) -> float:
    """One answer's combined score: 0 when stuck or any score is 0, else the harmonic mean."""
    if stuck or concept <= 0.0 or relevance <= 0.0 or fluency <= 0.0:
        return 0.0
    return 3.0 / (1.0 / concept + 1.0 / relevance + 1.0 / fluency)


def _clip01(x: float) -> float:
    return 0.0 if x <= 0.0 else 1.0 if x >= 1.0 else float(x)


@dataclass(frozen=True)
class AnswerScores:
    """Per-prompt axes of one candidate's answers (tuples, one entry per prompt)."""

    concept: tuple[float, ...]
    relevance: tuple[float, ...]  # PMI, nat/token (None entries never: a judge fills relevance_score only)
    relevance_score: tuple[float, ...]
    nll: tuple[float, ...]
    fluency_score: tuple[float, ...]
    stuck: tuple[bool, ...]
    combined: tuple[float, ...]
    relevance_reference: float
    fluency_reference: float
    margin: float
    reference_nll: tuple[float, ...] = ()  # F_0p of each prompt (fluency_reference is their mean)

    @property
    def fluency(self) -> float:
        return sum(self.nll) / len(self.nll)

    @property
    def fluency_excess(self) -> float:
        return self.fluency - self.fluency_reference

    @property
    def feasible(self) -> bool:
        return self.fluency_excess <= self.margin + 1e-12

    def per_prompt(self) -> tuple[float, ...]:
        """The values a keep rule compares: ``q_p`` when feasible, else minus the budget overrun."""
        if self.feasible:
            return self.combined
        over = self.fluency_excess - self.margin
        return tuple(-over for _ in self.combined)

    def value(self) -> float:
        pp = self.per_prompt()
        return sum(pp) / len(pp)

    def details(self) -> dict[str, float]:
        n = len(self.combined)
        success = sum(
            1
            for c, r, s in zip(self.concept, self.relevance_score, self.stuck)
            if c >= 0.5 and r >= ON_REQUEST and not s
        )
        return {
            "concept_rate": sum(1 for c in self.concept if c >= 0.5) / n,
            "relevance": sum(self.relevance) / n if self.relevance else math.nan,
            "relevance_score": sum(self.relevance_score) / n,
            "relevance_reference": self.relevance_reference,
            "on_request": sum(1 for r in self.relevance_score if r >= ON_REQUEST) / n,
            "fluency": self.fluency,
            "fluency_reference": self.fluency_reference,
            "fluency_excess": self.fluency_excess,
            "stuck": sum(self.stuck) / n,
            "success": success / n,
            "combined": sum(self.combined) / n,
            "feasible": 1.0 if self.feasible else 0.0,
        }


def _mean_logp(rows) -> list[float]:
    return [-(s / n) if n else 0.0 for s, n in rows]


def _answer_logps(
    ev,
    prompts: Sequence[Any],
    groups_ids: Sequence[Sequence[Sequence[int]]],
    others: list[list[int]],
    own: Sequence[int] | None = None,
    topic: Any = None,
) -> tuple[list[list[float]], list[list[float]]]:
    """Per group and answer: the mean per-token log-prob of the answer given its own request,
    and the mean over the other requests of the same given each of them (unsteered model).

    ``prompts``: the whole prompt set; answer ``j`` of a group answers ``prompts[own[j]]``
    (``own`` None: answer ``j`` answers ``prompts[j]``) and is scored against the requests
    ``prompts[others[j]]``.  With a ``topic`` request, the second value is the larger of that
    mean and the log-prob given the topic request, so that own minus it is the smaller PMI."""

    n = len(groups_ids[0]) if groups_ids else 0
    answers: Sequence[int] = range(n) if own is None else own
    prompt_ids: dict[int, list[int]] = {}
    for src in {i for j in range(n) for i in [answers[j], *others[j]]}:
        prompt_ids[src] = ev._prompt_ids(prompts[src])
    extra = [] if topic is None else [-1]
    if topic is not None:
        prompt_ids[-1] = ev._prompt_ids(topic)
    k = len(others[0]) if others else 0
    examples = []
    for group in groups_ids:
        for p, cont in enumerate(group):
            cont = list(cont)
            for src in [answers[p], *others[p], *extra]:
                ids = prompt_ids[src]
                examples.append((ids + cont, range(len(ids), len(ids) + len(cont))))
    rows = ev.unsteered_nll(examples)
    logp = _mean_logp(rows)
    own_all, other_all = [], []
    step = 1 + k + len(extra)
    for g in range(len(groups_ids)):
        mine, theirs = [], []
        for p in range(n):
            base = (g * n + p) * step
            mine.append(logp[base])
            mean_other = sum(logp[base + 1 : base + 1 + k]) / k if k else math.nan
            theirs.append(max(mean_other, logp[base + 1 + k]) if extra else mean_other)
        own_all.append(mine)
        other_all.append(theirs)
    return own_all, other_all


def answer_references(
    ev, prompts: Sequence[Any], ids: Sequence[Sequence[Sequence[int]]] | None = None, topic: Any = None
) -> tuple[tuple[float, ...], float]:
    """``(F_0p, ρ_0)``: the NLL of the unsteered model's own answer to each prompt, and the mean
    relevance of those answers (against ``topic`` too, when given); computed once per prompt set,
    generation length and topic request (``ids``: those answers, when the caller has just
    generated them unsteered)."""
    from autosteer._canonical import digest
    from autosteer.search.metrics import MetricJob
    from autosteer.steering.steer import steering_paused

    key = "answer:" + digest([list(prompts), ev.max_new_tokens] + ([] if topic is None else [topic]))
    if key not in ev._reference:
        if ids is None:
            with steering_paused(ev.model):
                _, ids = ev.generate_with_ids(MetricJob(list(prompts), None), early_stop=False)
        own, other = _answer_logps(ev, prompts, ids, relevance_others(len(prompts)), topic=topic)
        nll = [-x for x in own[0]]
        pmi = [a - b for a, b in zip(own[0], other[0])]
        ev._reference[key] = (tuple(nll), sum(pmi) / len(pmi))
    return ev._reference[key]


def answer_scores(
    ev,
    prompts: Sequence[Any],
    texts: Sequence[Sequence[str]],
    ids: Sequence[Sequence[Sequence[int]]],
    *,
    concept: Callable[[str], float],
    judge: Callable[[Any, str], float] | None = None,
    margin: float = 1.0,
    fluency_scale: float = FLUENCY_SCALE,
    unsteered: bool = False,
    context: Sequence[Any] | None = None,
    positions: Sequence[int] | None = None,
    topic: Any = None,
) -> list[AnswerScores]:
    """The :class:`AnswerScores` of each candidate group's answers (``texts`` and their token
    ``ids``, one list per group) to ``prompts``; ``unsteered``: the answers are the unsteered
    model's own greedy answers to these prompts (one group), so they are the reference too.

    ``context`` and ``positions``: when ``prompts`` are part of a prompt set, the whole set and
    the position of each prompt in it.  The references (``F_0p``, ``ρ_0``) and the other requests
    of each answer's relevance then come from the whole set, so every per-prompt score is what
    scoring the whole set gives; only the set-level terms (``F``, ``F_0``, feasibility) are those
    of the part (:func:`join_scores` joins parts into the whole set's scores).  ``topic``: a
    request for the concept itself; relevance is then also taken against it (module docstring)."""
    from autosteer.search.metrics import REPETITION_LIMIT, repetition

    full = list(prompts) if context is None else list(context)
    where = range(len(prompts)) if positions is None else list(positions)
    if len(full) < 2 and judge is None:
        from autosteer.errors import InvalidArgumentError

        raise InvalidArgumentError(
            "the answer objective scores relevance against the other prompts of the set, so it needs at least 2 "
            f"prompts (got {len(full)}), or a relevance judge"
        )
    f0p_all, rho0 = answer_references(ev, full, ids if unsteered and context is None else None, topic)
    f0p = tuple(f0p_all[i] for i in where)
    f0 = sum(f0p) / len(f0p)
    others_all = relevance_others(len(full))
    own, other = _answer_logps(ev, full, ids, [others_all[i] for i in where], where, topic)
    ref = max(rho0, RELEVANCE_FLOOR)
    out = []
    for g, (group_texts, group_ids) in enumerate(zip(texts, ids)):
        nll = tuple(-x for x in own[g])
        pmi = tuple(a - b for a, b in zip(own[g], other[g]))
        c = tuple(_clip01(float(concept(t))) for t in group_texts)
        if judge is None:
            r = tuple(_clip01(x / ref) for x in pmi)
        else:
            r = tuple(_clip01(float(judge(p, t))) for p, t in zip(prompts, group_texts))
        f = tuple(_clip01(1.0 - max(0.0, x - x0) / fluency_scale) for x, x0 in zip(nll, f0p))
        s = tuple(repetition(list(i)) > REPETITION_LIMIT for i in group_ids)
        q = tuple(combine(*args) for args in zip(c, r, f, s))
        out.append(AnswerScores(c, pmi, r, nll, f, s, q, rho0, f0, margin, f0p))
    return out


def join_scores(parts: Sequence[AnswerScores]) -> AnswerScores:
    """The scores of a prompt set from those of consecutive parts of it (in prompt order, each
    scored with the whole set as its ``context``): the per-prompt scores joined, ``F_0``
    recomputed over the whole set, so that feasibility, the value and the details are exactly
    those of scoring the whole set at once."""

    def cat(name: str) -> tuple:
        return tuple(x for p in parts for x in getattr(p, name))

    reference = cat("reference_nll")
    first = parts[0]
    return AnswerScores(
        cat("concept"),
        cat("relevance"),
        cat("relevance_score"),
        cat("nll"),
        cat("fluency_score"),
        cat("stuck"),
        cat("combined"),
        first.relevance_reference,
        sum(reference) / len(reference),
        first.margin,
        reference,
    )
