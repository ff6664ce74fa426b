"""Calibration before a search: how strong is "strong" at each layer, and which layers carry a concept.

Steering strength means different things at different layers and on different
models.  :func:`calibrate` measures it without generating anything:

* per layer ``L``, the coefficient ``c_L`` at which steering with the concept
  moves the next-token distribution after neutral prompts by a target KL
  (``KL(steered || unsteered)``, mean over the prompts), solved by a few
  root-finding steps in log-log space (KL grows about as ``c**2`` for small
  ``c``), every layer in the same batched forward pass per step;
* per layer, a teacher-forced pre-screen at ``c_L``: how much the steering
  raises the mean per-token log-probability of the concept's positive texts
  after neutral requests, minus how much it raises that of its negative texts
  (a lift of the concept itself, not of any change at all).

:func:`concept_space` turns that into a search space that needs nothing but
the concept: the window of ``window`` consecutive layers with the best
pre-screen, and coefficients from ``coeff_multiples`` times the calibrated
``c_L`` of those layers.  The calibration is reported in the
:class:`Calibration` it returns beside the space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autosteer.errors import InvalidArgumentError

__all__ = ["NEUTRAL_PROMPTS", "TARGET_KL", "Calibration", "calibrate", "concept_space"]

#: Neutral requests the calibration measures the next-token distribution after.
NEUTRAL_PROMPTS: tuple[str, ...] = (
    "Tell me something interesting.",
    "What should I do this afternoon?",
    "Can you help me with a question?",
    "Write a sentence about anything you like.",
)

#: The largest coefficient the solver tries (where KL saturates below the target, e.g. a layer
#: whose steering barely reaches the output, the calibration stops here).
MAX_COEFF = 16.0

#: The default target KL (nat) of the calibrated coefficient.  Measured on SmolLM2-135M-Instruct
#: (weddings concept, 40-token greedy answers): at KL 0.5 the coefficients are 0.2-0.4 over layers
#: 6-24, and 1.5 times that at layer 14 spends the whole +1 nat/token fluency budget, so
#: multiples 0.5-1.5 of it span "barely steered" to "at the budget".
TARGET_KL = 0.5


@dataclass(frozen=True)
class Calibration:
    """Per layer: the calibrated coefficient, the KL it reached, the pre-screen lift (nat/token)."""

    target_kl: float
    coeff: dict[int, float]
    kl: dict[int, float]
    lift: dict[int, float] = field(default_factory=dict)
    passes: int = 0

    def best_window(self, width: int) -> tuple[int, int]:
        """First and last of the ``width`` neighbouring calibrated layers (neighbours in the
        calibrated list, which may skip layers) with the largest summed lift."""
        layers = sorted(self.coeff)
        width = max(1, min(width, len(layers)))
        best, where = -math.inf, (layers[0], layers[width - 1])
        for i in range(len(layers) - width + 1):
            chunk = layers[i : i + width]
            s = sum(self.lift.get(layer, 0.0) for layer in chunk)
            if s > best:
                best, where = s, (chunk[0], chunk[-1])
        return where

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_kl": self.target_kl,
            "coeff": {str(k): v for k, v in self.coeff.items()},
            "kl": {str(k): v for k, v in self.kl.items()},
            "lift": {str(k): v for k, v in self.lift.items()},
            "passes": self.passes,
        }


def _candidates(layers, coeffs, source):
    from autosteer.search.candidate import SteerCandidate, SteerVector

    return [SteerCandidate((SteerVector(layer, c, source),)) for layer, c in zip(layers, coeffs)]


def calibrate(
    model: Any,
    tokenizer: Any,
    source: Any,
    layers: Sequence[int],
    *,
    target_kl: float = TARGET_KL,
    prompts: Sequence[Any] | None = None,
    chat: bool | None = None,
    steps: int = 4,
    start: float = 0.3,
    screen: bool = True,
    screen_texts: int = 4,
    threads: int | None = None,
    steer: Any = None,
) -> Calibration:
    """Calibrate the coefficient of ``source`` (a text or a Concept) at each of ``layers``.

    ``steps`` root-finding passes (each one batched forward over every layer's
    candidate and the neutral prompts) from ``start``; then, with ``screen``,
    one teacher-forced pass of ``screen_texts`` positive and negative texts of
    the concept after the neutral prompts (a plain text has no negatives: its
    lift is that of the text alone).
    """
    import torch

    from autosteer.search.evaluator import SteerEvaluator
    from autosteer.search.metrics import MetricJob
    from autosteer.steering.concept import Concept
    from autosteer.steering.steer import Steer

    layers = [int(x) for x in layers]
    if not layers:
        raise InvalidArgumentError("calibrate needs at least one layer")
    if not (isinstance(target_kl, (int, float)) and target_kl > 0):
        raise InvalidArgumentError(f"target_kl must be a positive number of nats, got {target_kl!r}")
    if chat is None:
        chat = bool(getattr(tokenizer, "chat_template", None))
    prompts = list(prompts or NEUTRAL_PROMPTS)
    steer = steer or Steer(model, tokenizer)
    ev = SteerEvaluator(model, tokenizer, "kl_neutral", chat=chat, batch_size=len(prompts), threads=threads)
    coeff = {layer: float(start) for layer in layers}
    kl: dict[int, float] = {}
    history: dict[int, list[tuple[float, float]]] = {layer: [] for layer in layers}
    passes = 0
    from autosteer.search._threads import using_threads

    with ev.eval_mode(), torch.inference_mode(), using_threads(ev.threads, model):
        (plain,) = ev.next_token_logprobs(MetricJob(prompts, None))
        for _ in range(steps):
            cands = _candidates(layers, [coeff[layer] for layer in layers], source)
            groups = ev.next_token_logprobs(MetricJob(prompts, None, cands, steer))
            passes += 1
            for layer, logp in zip(layers, groups):
                k = float((logp.exp() * (logp - plain)).sum(-1).clamp_min(0).mean())
                kl[layer] = k
                history[layer].append((coeff[layer], k))
                coeff[layer] = _next_coeff(history[layer], target_kl)
        # report the coefficient whose KL was measured closest to the target (log distance)
        for layer in layers:
            c, k = min(history[layer], key=lambda ck: abs(math.log(max(ck[1], 1e-12) / target_kl)))
            coeff[layer], kl[layer] = c, k
        lift: dict[int, float] = {}
        if screen:
            pos = list(source.positive if isinstance(source, Concept) else [source])[:screen_texts]
            neg = list(source.negative)[:screen_texts] if isinstance(source, Concept) else []
            lift = _lift(ev, steer, prompts, layers, coeff, source, pos, neg)
            passes += 1
    return Calibration(float(target_kl), coeff, kl, lift, passes)


def _next_coeff(history: list[tuple[float, float]], target: float) -> float:
    """The next coefficient: a secant step on log KL against log c (slope 2 until two points exist)."""
    c, k = history[-1]
    k = max(k, 1e-9)
    slope = 2.0
    if len(history) >= 2:
        c0, k0 = history[-2]
        k0 = max(k0, 1e-9)
        if c0 != c and k0 != k:
            slope = (math.log(k) - math.log(k0)) / (math.log(c) - math.log(c0))
            slope = min(max(slope, 0.5), 4.0)
    step = (math.log(target) - math.log(k)) / slope
    step = min(max(step, -math.log(8.0)), math.log(8.0))
    return min(c * math.exp(step), MAX_COEFF)


def _text_examples(ev, prompts, texts):
    """(ids, scored positions) of each text (plain strings only) as the answer to each prompt."""
    examples = []
    for p in prompts:
        ids = ev._prompt_ids(p)
        for t in texts:
            if not isinstance(t, str):
                continue  # a chat conversation of a concept: not an answer text
            cont = list(ev.tokenizer(t, add_special_tokens=False)["input_ids"])
            if cont:
                examples.append((ids + cont, range(len(ids), len(ids) + len(cont))))
    return examples


def _lift(ev, steer, prompts, layers, coeff, source, pos, neg) -> dict[int, float]:
    """Per layer: mean per-token log-prob gain of the positive texts minus that of the negative ones."""
    from autosteer.search.metrics import MetricJob

    def mean_logp(rows):
        return sum(-s / n for s, n in rows if n) / max(1, sum(1 for _, n in rows if n))

    cands = _candidates(layers, [coeff[layer] for layer in layers], source)
    out: dict[int, float] = {}
    for texts, sign in ((pos, 1.0), (neg, -1.0)):
        if not texts:
            continue
        examples = _text_examples(ev, prompts, texts)
        if not examples:
            continue
        (plain,) = ev._nll(MetricJob([None] * len(examples), None), examples)
        steered = ev._nll(MetricJob([None] * len(examples), None, cands, steer), examples)
        base = mean_logp(plain)
        for layer, rows in zip(layers, steered):
            out[layer] = out.get(layer, 0.0) + sign * (mean_logp(rows) - base)
    return out


def model_fingerprint(model: Any) -> str:
    """What identifies a model's weights cheaply: its class, config and a few parameter sums."""
    import torch

    from autosteer._canonical import digest

    params = list(model.parameters())
    with torch.no_grad():
        sums = [float(p.detach().float().sum()) for p in (params[:2] + params[-2:])]
    config = model.config.to_dict() if hasattr(model, "config") else {}
    config = {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool)) or v is None}
    return digest([type(model).__name__, config, sums, len(params)])


def cached_calibration(
    model: Any, tokenizer: Any, source: Any, layers: Sequence[int], *, cache: bool = True, **kwargs
) -> Calibration:
    """:func:`calibrate`, remembered on disk (``<cache>/calibration/<key>.json`` under the model
    cache of :func:`autosteer.models.cache_root`) per model weights, source, layers and options:
    a second search for the same concept on the same model skips the forward passes."""
    import json
    import os

    from autosteer._canonical import digest
    from autosteer.steering.concept import Concept

    if not cache:
        return calibrate(model, tokenizer, source, layers, **kwargs)
    from autosteer.models import cache_root

    what = source.to_dict() if isinstance(source, Concept) else source
    opts = {k: v for k, v in kwargs.items() if k not in ("threads", "steer")}
    key = digest([model_fingerprint(model), what, list(layers), opts, 1])
    path = cache_root() / "calibration" / f"{key}.json"
    try:
        d = json.loads(path.read_text())
        return Calibration(
            d["target_kl"],
            {int(k): v for k, v in d["coeff"].items()},
            {int(k): v for k, v in d["kl"].items()},
            {int(k): v for k, v in d["lift"].items()},
            0,
        )
    except (OSError, ValueError, KeyError):
        pass
    cal = calibrate(model, tokenizer, source, layers, **kwargs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cal.to_dict()))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the next run the passes
    return cal


def concept_space(
    model: Any,
    tokenizer: Any,
    concept: Any,
    *,
    layer_fraction: tuple[float, float] = (0.25, 0.65),
    stride: int = 3,
    window: int = 3,
    coeff_multiples: tuple[float, float] = (0.5, 1.5),
    target_kl: float = TARGET_KL,
    max_vectors: int = 1,
    chat: bool | None = None,
    threads: int | None = None,
    steps: int = 3,
    screen_texts: int = 2,
    cache: bool = True,
    positions: str = "all",
):
    """``(space, calibration)``: a search space for ``concept`` from the model alone.

    The defaults were measured on SmolLM2-135M-Instruct: layers past two thirds of the model
    steer into stuck repetition at the calibrated strength (a wider window at 0.2-0.8 picked
    layers 18-24 and every candidate of a demo round went over the fluency budget), and two
    vectors at calibrated strength add up past the budget, so one vector per candidate.

    Every ``stride``-th layer of ``layer_fraction`` of the model is calibrated
    and pre-screened; the space covers the layers from the first to the last
    of the best ``window`` neighbouring calibrated layers, with coefficient
    magnitudes ``coeff_multiples`` times the smallest and largest calibrated
    coefficient among them, constant schedules, up to ``max_vectors``.
    With ``cache`` the calibration is remembered on disk (:func:`cached_calibration`);
    ``calibration.passes`` is 0 when it came from there.

    ``positions="answer"`` steers the generated tokens only: every vector gets
    ``WarmupSchedule(steps=1, start=0)`` (multiplier 0 at the prefill, 1 from
    the first decode step), so the request is read unsteered, and the top of
    the coefficient range doubles the largest calibrated coefficient instead of
    1.5x it (on SmolLM2 answer-only steering cost about half the fluency at
    equal strength; docs/search-real.md).  ``"all"`` (default) steers every
    position, llm_steer's semantics.
    """
    if positions not in ("all", "answer"):
        raise InvalidArgumentError(f"positions must be 'all' or 'answer', got {positions!r}")
    from autosteer.search.space import SteerSearchSpace
    from autosteer.steering.steer import Steer

    steer = Steer(model, tokenizer)
    n = steer.num_layers
    lo, hi = int(layer_fraction[0] * n), min(n - 1, max(int(layer_fraction[0] * n), int(layer_fraction[1] * n)))
    layers = list(range(lo, hi + 1, max(1, int(stride))))
    cal = cached_calibration(
        model,
        tokenizer,
        concept,
        layers,
        cache=cache,
        target_kl=target_kl,
        chat=chat,
        threads=threads,
        steer=steer,
        steps=steps,
        screen_texts=screen_texts,
    )
    a, b = cal.best_window(window)
    cs = [cal.coeff[layer] for layer in layers if a <= layer <= b]
    top = coeff_multiples[1] * (4 / 3 if positions == "answer" else 1.0)
    coeff_range = (_round(coeff_multiples[0] * min(cs)), _round(top * max(cs)))
    space = SteerSearchSpace(
        layer_range=(a, b), coeff_range=coeff_range, texts=(concept,), max_vectors=max_vectors, schedules=("none",)
    )
    if positions == "answer":
        space = space.replace(schedules=("warmup",), schedule_ranges={"warmup": {"steps": 1, "start": 0.0}})
    return space, cal


def _round(x: float) -> float:
    return float(f"{x:.3g}")
