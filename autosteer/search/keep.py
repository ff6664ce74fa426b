"""Keep rules: does a candidate's result beat the best so far?

A keep rule is an object with its own options, given whole to the runner
(``AutoSteerRunner(keep_rule=PairedRule(test="sign", alpha=0.05))``) or named
with its defaults (``keep_rule="paired"``, ``autosteer search --keep-rule paired --alpha 0.05``):

``mean`` (default)  :class:`MeanRule` (``min_improvement``): keep a candidate whose
                    score beats the best so far by more than ``min_improvement``.
``paired``          :class:`PairedRule` (``min_improvement``, ``test``, ``alpha``):
                    that, and its per-prompt values beat the best's on the same
                    prompts in a one-sided paired test (``test``: ``"wilcoxon"``,
                    the signed-rank test, or ``"sign"``) at level ``alpha``; the
                    p-value is logged in the record's details as ``keep_p``.  It
                    needs a metric with per-prompt values (every built-in one; a
                    custom function must return one number per prompt).

The rule only judges; the runner decides, once, and writes the decision to the
log.  Adding a rule: a :class:`KeepRule` subclass with its ``options`` and
:meth:`KeepRule.judge`, decorated with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from autosteer.errors import InvalidArgumentError
from autosteer.search.options import Configurable, Option, level, make, non_negative_real, one_of
from autosteer.search.stats import TESTS, paired_p
from autosteer.search.trial import improves

__all__ = ["DEFAULT_KEEP_RULE", "KEEP_RULES", "KeepRule", "MeanRule", "PairedRule", "as_keep_rule", "register"]


class KeepRule(Configurable):
    """Base class of the keep rules: options declared in :attr:`options`, and :meth:`judge`.

    ``needs_per_prompt``: whether the rule compares per-prompt values (then
    the metric must return them; the runner checks at the baseline).
    """

    kind: ClassVar[str] = "keep rule"
    needs_per_prompt: ClassVar[bool] = False
    min_improvement: float

    def judge(
        self,
        score: float,
        per_prompt: Sequence[float] | None,
        best_score: float,
        best_per_prompt: Sequence[float] | None,
        lower_is_better: bool,
    ) -> tuple[bool, dict[str, float]]:
        """Whether a finite ``score`` beats the best so far, and details to log with the decision."""
        raise NotImplementedError


#: name -> KeepRule class; :func:`register` adds a row.
KEEP_RULES: dict[str, type[KeepRule]] = {}

DEFAULT_KEEP_RULE = "mean"


def register(cls: type[KeepRule]) -> type[KeepRule]:
    """Class decorator: add a :class:`KeepRule` subclass to :data:`KEEP_RULES` under its name."""
    if not cls.name or cls.name in KEEP_RULES:
        raise InvalidArgumentError(f"a keep rule named {cls.name!r} is already registered or the name is empty")
    KEEP_RULES[cls.name] = cls
    return cls


def as_keep_rule(value: Any) -> KeepRule:
    """``value`` as a :class:`KeepRule`: an object as it is, a name with its defaults (None: ``"mean"``)."""
    return make("keep rule", KEEP_RULES, KeepRule, value, default=DEFAULT_KEEP_RULE)


MIN_IMPROVEMENT = Option(
    "min_improvement",
    0.0,
    "a candidate must beat the best score by more than this",
    check=non_negative_real,
    parse=float,
    metavar="X",
)


@register
class MeanRule(KeepRule):
    """Keep a candidate whose score beats the best so far by more than ``min_improvement``
    (``keep_rule="mean"``, the default): ``MeanRule(min_improvement=0.0)``."""

    name = "mean"
    options = (MIN_IMPROVEMENT,)

    def judge(self, score, per_prompt, best_score, best_per_prompt, lower_is_better):
        return improves(score, best_score, lower_is_better, self.min_improvement), {}


@register
class PairedRule(KeepRule):
    """The mean rule, and a one-sided paired test on the per-prompt values at level ``alpha``
    (``keep_rule="paired"``): ``PairedRule(min_improvement=0.0, test="wilcoxon", alpha=0.1)``.

    ``test``: ``"wilcoxon"`` (signed-rank) or ``"sign"``; see :mod:`autosteer.search.stats`.
    """

    name = "paired"
    needs_per_prompt = True
    options = (
        MIN_IMPROVEMENT,
        Option(
            "test",
            "wilcoxon",
            "the paired test of the per-prompt values",
            check=one_of(*TESTS),
            parse=str,
            choices=TESTS,
            flag="--paired-test",
        ),
        Option(
            "alpha",
            0.1,
            "the level of the paired test (strictly between 0 and 1)",
            check=level,
            parse=float,
            metavar="P",
        ),
    )
    test: str
    alpha: float

    def judge(self, score, per_prompt, best_score, best_per_prompt, lower_is_better):
        if per_prompt is None or best_per_prompt is None or len(per_prompt) != len(best_per_prompt):
            raise InvalidArgumentError("keep_rule='paired' needs one value per prompt from the metric")
        p = paired_p(per_prompt, best_per_prompt, lower_is_better, self.test)
        better = improves(score, best_score, lower_is_better, self.min_improvement) and p <= self.alpha
        return better, {"keep_p": p}
