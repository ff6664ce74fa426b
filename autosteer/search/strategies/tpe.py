"""Tree-structured Parzen estimator through Optuna's ask/tell interface (``strategy="tpe"``).

``TPE(n_startup=8)`` (``strategy="tpe"``; the former name ``TPESearch`` is
the same class).  Needs the optional dependency: ``pip install "autosteer[optuna]"``.

How a candidate maps to Optuna parameters (define-by-run, conditional):
``n_vectors`` (1..max_vectors), then for each vector ``i`` used: ``layer_i``
(int), ``text_i`` (the index into the space's signed texts, so a text listed
in ``negative_texts`` carries its minus sign), ``coeff_i`` (the magnitude, on
the space's scale) and ``schedule_i`` (an index into the space's schedules)
with that schedule's own parameters ``<kind>_<param>_i``.  Optuna's
``group=True`` multivariate TPE handles the parameters that only some trials
have.

Like every strategy here, a round is a pure function of the history: each
round builds a fresh in-memory study, seeded from the seed and the length of
the history, tells it every evaluated candidate (crashes as failed trials,
the baseline left out: it has no vector), and asks it for the round's
candidates with the constant liar on, so K asks in one round differ.  A
proposal that was already tried (TPE can repeat itself once the rounded
coefficients coincide) is replaced by a random sample.  The first
``n_startup`` candidates are random samples (TPE's own start-up).
"""

from __future__ import annotations

import math
import random
import warnings
from typing import Any

from autosteer.errors import AutoSteerError
from autosteer.search.candidate import SteerCandidate, SteerVector
from autosteer.search.options import Option, positive_int
from autosteer.search.strategies import _sampling
from autosteer.search.strategies.base import Strategy, register
from autosteer.search.trial import TrialRecord

__all__ = ["OPTUNA_INSTALL", "TPE", "TPESearch"]

OPTUNA_INSTALL = 'pip install "autosteer[optuna]"  (or: pip install optuna)'


def _optuna():
    try:
        import optuna
    except ImportError:
        raise AutoSteerError(f"strategy='tpe' needs Optuna, which is not installed: {OPTUNA_INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@register
class TPE(Strategy):
    """Optuna's TPE sampler over the search space (``strategy="tpe"``); see the module docstring.

    ``TPE(n_startup=8)``; bound at once with ``TPE(space, seed=0,
    lower_is_better=False, n_startup=8)``.
    """

    name = "tpe"
    options = (
        Option(
            "n_startup",
            8,
            "random samples before TPE models the history (Optuna's n_startup_trials)",
            check=positive_int,
            parse=int,
            metavar="N",
        ),
    )
    n_startup: int

    def _bound(self) -> None:
        _optuna()  # a clear error now, not at the first proposal
        self._schedules = tuple(self._require_bound().schedules)

    # -- the mapping between candidates and Optuna parameters ------------------------

    def _distributions(self, params: dict[str, Any]) -> dict[str, Any]:
        optuna = _optuna()
        sp = self._require_bound()
        lo, hi = _sampling.layer_bounds(sp)
        clo, chi = sp.coeff_range
        log = sp.coeff_scale == "log" and clo > 0
        out: dict[str, Any] = {"n_vectors": optuna.distributions.IntDistribution(1, sp.max_vectors)}
        if sp.system_prompts:  # 0: no system prompt, i: system_prompts[i - 1]
            out["system"] = optuna.distributions.IntDistribution(0, len(sp.system_prompts))
        for i in range(params.get("n_vectors", 0)):
            out[f"layer_{i}"] = optuna.distributions.IntDistribution(lo, hi)
            out[f"text_{i}"] = optuna.distributions.IntDistribution(0, len(sp.signed_texts) - 1)
            out[f"coeff_{i}"] = optuna.distributions.FloatDistribution(clo, chi, log=log)
            out[f"schedule_{i}"] = optuna.distributions.IntDistribution(0, len(self._schedules) - 1)
            kind = self._schedules[params[f"schedule_{i}"]]
            for name, (plo, phi, integer) in self._schedule_params(kind).items():
                dist = (
                    optuna.distributions.IntDistribution(plo, phi)
                    if integer
                    else optuna.distributions.FloatDistribution(plo, phi)
                )
                out[f"{kind}_{name}_{i}"] = dist
        return out

    def _schedule_params(self, kind: str) -> dict[str, tuple]:
        from autosteer.steering.schedules import SCHEDULE_KINDS

        if kind == "none":
            return {}
        out = {}
        for p in SCHEDULE_KINDS[kind].params:
            lo, hi = self._require_bound().schedule_ranges[kind][p.name]
            if lo < hi:  # a fixed parameter is no parameter to search
                out[p.name] = (lo, hi, p.kind == "int")
        return out

    def _params_of(self, cand: SteerCandidate) -> dict[str, Any] | None:
        """The Optuna parameters of a candidate, or None when it cannot be told (outside the space;
        prompting alone, which has no vectors to parameterise)."""
        sp = self._require_bound()
        if not 1 <= len(cand) <= sp.max_vectors:
            return None
        params: dict[str, Any] = {"n_vectors": len(cand)}
        if sp.system_prompts:
            if cand.system is not None and cand.system not in sp.system_prompts:
                return None
            params["system"] = 0 if cand.system is None else 1 + sp.system_prompts.index(cand.system)
        elif cand.system is not None:
            return None
        for i, v in enumerate(cand.vectors):
            key = (v.text, 1 if v.coeff > 0 else -1)
            try:
                text_i = sp.signed_texts.index(key)
            except ValueError:
                return None
            kind = "none" if v.schedule is None else v.schedule["type"]
            if kind not in self._schedules:
                return None
            mag = abs(v.coeff)
            lo, hi = _sampling.layer_bounds(sp)
            if not (lo <= v.layer_idx <= hi and sp.coeff_range[0] <= mag <= sp.coeff_range[1]):
                return None
            params.update(
                {
                    f"layer_{i}": v.layer_idx,
                    f"text_{i}": text_i,
                    f"coeff_{i}": mag,
                    f"schedule_{i}": self._schedules.index(kind),
                }
            )
            for name, (plo, phi, integer) in self._schedule_params(kind).items():  # none for kind "none"
                x = v.schedule[name]  # type: ignore[index]  # kind != "none" here, so v.schedule is a dict
                if not plo <= x <= phi:
                    return None
                params[f"{kind}_{name}_{i}"] = int(x) if integer else float(x)
        return params

    def _ask(self, trial) -> SteerCandidate | None:
        sp = self._require_bound()
        n = trial.suggest_int("n_vectors", 1, sp.max_vectors)
        system = None
        if sp.system_prompts:
            i_sys = trial.suggest_int("system", 0, len(sp.system_prompts))
            system = None if i_sys == 0 else sp.system_prompts[i_sys - 1]
        lo, hi = _sampling.layer_bounds(sp)
        clo, chi = sp.coeff_range
        log = sp.coeff_scale == "log" and clo > 0
        vecs: list[SteerVector] = []
        taken: set = set()
        for i in range(n):
            layer = trial.suggest_int(f"layer_{i}", lo, hi)
            text, sign = sp.signed_texts[trial.suggest_int(f"text_{i}", 0, len(sp.signed_texts) - 1)]
            mag = _sampling.clip_coeff(sp, trial.suggest_float(f"coeff_{i}", clo, chi, log=log))
            kind = self._schedules[trial.suggest_int(f"schedule_{i}", 0, len(self._schedules) - 1)]
            schedule = None
            if kind != "none":
                from autosteer.steering.schedules import SCHEDULE_KINDS

                schedule = {"type": kind}
                searched = self._schedule_params(kind)
                for p in SCHEDULE_KINDS[kind].params:
                    plo, phi = sp.schedule_ranges[kind][p.name]
                    if p.name not in searched:
                        schedule[p.name] = plo
                    elif p.kind == "int":
                        schedule[p.name] = trial.suggest_int(f"{kind}_{p.name}_{i}", plo, phi)
                    else:
                        x = trial.suggest_float(f"{kind}_{p.name}_{i}", plo, phi)
                        schedule[p.name] = min(max(_sampling.round_sig(x, 3), plo), phi)
            if (layer, text) in taken:
                continue  # the same (layer, text) twice: one vector of it is enough
            taken.add((layer, text))
            vecs.append(SteerVector(layer, sign * mag, text, schedule))
        return SteerCandidate(tuple(vecs), system, sp.prompt_role) if vecs else None

    # -- proposals ---------------------------------------------------------------

    def _propose(self, rng: random.Random, history: list[TrialRecord], n: int, tried: set[str]) -> list[SteerCandidate]:
        optuna = _optuna()
        seed = rng.randrange(2**31)
        with warnings.catch_warnings():
            # group=True is marked experimental; it is what conditional parameters need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=self.n_startup
            )
        study = optuna.create_study(sampler=sampler, direction="minimize" if self.lower_is_better else "maximize")
        for r in history:
            if r.status == "baseline":
                continue
            params = self._params_of(r.candidate)
            if params is None:
                continue
            ok = r.status != "crash" and r.score is not None and math.isfinite(r.score)
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=self._distributions(params),
                    value=r.score if ok else None,
                    state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
                )
            )
        out: list[SteerCandidate] = []
        for _ in range(n):
            trial = study.ask()
            cand = self._ask(trial)
            if cand is None or cand.key() in tried:
                cand = self._draw(lambda: _sampling.random_candidate(rng, self._require_bound()), tried)
            else:
                tried.add(cand.key())
            if cand is None:
                break
            out.append(cand)
        return out


#: The former name of :class:`TPE`.
TPESearch = TPE
