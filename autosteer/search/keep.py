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

Both rules take ``screen`` and ``screen_alpha``: early pruning, as Optuna's
``WilcoxonPruner`` does.  With ``screen=m`` (0, the default, is off) each round
is scored in two stages: every candidate on the first ``m`` search prompts
(one batched pass), then only the survivors on the other prompts (one batched
pass).  A candidate is pruned after the first stage when a one-sided paired
test on those ``m`` prompts says it is worse than the best before the round::

    d_p = v_best,p - v_cand,p          (p = 1..m; negated when lower is better)
    prune  <=>  P(d shifted above 0) = paired_p < screen_alpha  and  mean_p d_p > 0

(the test is the rule's ``test``, Wilcoxon signed-rank for the mean rule; the
second condition never prunes a candidate whose mean on those prompts beats
the best's).  A pruned candidate is logged as a ``discard`` whose score and
per-prompt values are those of the ``m`` prompts, with ``details["fidelity"]
= m / n`` and ``details["screen_p"]``, and the reason in its error column.  A
survivor's two parts are joined (:meth:`~autosteer.search.metrics.Metric.merge`)
into the result of scoring all ``n`` prompts, and decided as usual.  The
runner refuses ``screen >= n`` and a metric that cannot be joined
(``CustomMetric``, ``KLNeutral``); the rule itself refuses a ``screen`` too
small for any test at ``screen_alpha`` to prune (``2**-screen >= screen_alpha``).

The rule only judges; the runner decides, once, and writes the decision to the
log.  Adding a rule: a :class:`KeepRule` subclass with its ``options`` and
:meth:`KeepRule.judge`, decorated with :func:`register`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from autosteer.errors import InvalidArgumentError
from autosteer.search.options import (
    Configurable,
    Option,
    level,
    make,
    non_negative_int,
    non_negative_real,
    one_of,
    registrar,
)
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
    screen: int = 0
    screen_alpha: float = 0.1

    def _set_options(self, given: dict[str, Any]) -> None:
        super()._set_options(given)
        if self.screen and 2.0**-self.screen >= self.screen_alpha:
            need = next(m for m in range(1, 64) if 2.0**-m < self.screen_alpha)
            raise InvalidArgumentError(
                f"{type(self).__name__}.screen={self.screen} prompts are too few to prune at "
                f"screen_alpha={self.screen_alpha:g}: the smallest one-sided p-value on {self.screen} prompts is "
                f"2**-{self.screen} = {2.0**-self.screen:g}; give screen >= {need} (or 0: no screening), "
                "or a larger screen_alpha"
            )

    def fingerprint(self) -> dict[str, Any]:
        """The options that identify a run; without screening, as before screening existed (so
        the run ids of earlier logs stay valid)."""
        out = super().fingerprint()
        if not self.screen:
            out.pop("screen", None)
            out.pop("screen_alpha", None)
        return out

    @property
    def screen_test(self) -> str:
        """The paired test of the screening stage: the rule's ``test``, else Wilcoxon's."""
        return str(getattr(self, "test", "wilcoxon"))

    def prunes(
        self, per_prompt: Sequence[float], best_per_prompt: Sequence[float], lower_is_better: bool
    ) -> tuple[bool, float]:
        """Whether a candidate's values on the screened prompts are reliably worse than the best's
        on the same prompts (see the module docstring), and the test's p-value."""
        p = paired_p(best_per_prompt, per_prompt, lower_is_better, self.screen_test)
        mean, best = sum(per_prompt) / len(per_prompt), sum(best_per_prompt) / len(best_per_prompt)
        return p < self.screen_alpha and improves(best, mean, lower_is_better, 0.0), p

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


#: Class decorator: add a :class:`KeepRule` subclass to :data:`KEEP_RULES` under its name.
register = registrar("keep rule", KEEP_RULES)


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


SCREEN = Option(
    "screen",
    0,
    "prompts of the screening stage (0: off): each round scores every candidate on the first N prompts, "
    "prunes those a one-sided paired test finds worse than the best, and scores only the others on the rest",
    check=non_negative_int,
    parse=int,
    metavar="N",
)
SCREEN_ALPHA = Option(
    "screen_alpha",
    0.1,
    "the level of the screening test: a candidate is pruned when p < this (strictly between 0 and 1)",
    check=level,
    parse=float,
    metavar="P",
)


@register
class MeanRule(KeepRule):
    """Keep a candidate whose score beats the best so far by more than ``min_improvement``
    (``keep_rule="mean"``, the default): ``MeanRule(min_improvement=0.0, screen=0, screen_alpha=0.1)``;
    ``screen``: see the module docstring."""

    name = "mean"
    options = (MIN_IMPROVEMENT, SCREEN, SCREEN_ALPHA)

    def judge(self, score, per_prompt, best_score, best_per_prompt, lower_is_better):
        return improves(score, best_score, lower_is_better, self.min_improvement), {}


@register
class PairedRule(KeepRule):
    """The mean rule, and a one-sided paired test on the per-prompt values at level ``alpha``
    (``keep_rule="paired"``): ``PairedRule(min_improvement=0.0, test="wilcoxon", alpha=0.1, screen=0,
    screen_alpha=0.1)``.

    ``test``: ``"wilcoxon"`` (signed-rank) or ``"sign"``; see :mod:`autosteer.search.stats`.  The
    screening stage (``screen``, see the module docstring) uses the same test.
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
        SCREEN,
        SCREEN_ALPHA,
    )
    test: str
    alpha: float

    def judge(self, score, per_prompt, best_score, best_per_prompt, lower_is_better):
        if per_prompt is None or best_per_prompt is None or len(per_prompt) != len(best_per_prompt):
            raise InvalidArgumentError("keep_rule='paired' needs one value per prompt from the metric")
        p = paired_p(per_prompt, best_per_prompt, lower_is_better, self.test)
        better = improves(score, best_score, lower_is_better, self.min_improvement) and p <= self.alpha
        return better, {"keep_p": p}
