"""Random draws from a search space, shared by the strategies.

Each function takes the ``random.Random`` to draw from and the (resolved)
space, so a strategy's proposals depend only on its generator.
Coefficients are rounded to 4 significant digits and float schedule
parameters to 3, so the candidates' JSON stays short and exact.
"""

from __future__ import annotations

import math
import random
from typing import Any

from autosteer.errors import SearchSpaceError
from autosteer.search.candidate import SteerCandidate, SteerVector
from autosteer.search.space import SteerSearchSpace
from autosteer.steering.concept import Concept

__all__ = [
    "clip_coeff",
    "magnitude",
    "perturb",
    "prompt_only",
    "random_candidate",
    "random_vector",
    "round_sig",
    "schedule",
]


def round_sig(x: float, digits: int) -> float:
    """Round to ``digits`` significant digits; ``-0.0`` becomes ``0.0``."""
    if x == 0:
        return 0.0
    return float(f"{x:.{digits}g}") + 0.0


def clip_coeff(space: SteerSearchSpace, x: float) -> float:
    lo, hi = space.coeff_range
    x = round_sig(min(max(x, lo), hi), 4)
    # rounding may step just outside the range; the bounds themselves are exact
    return min(max(x, lo), hi)


def magnitude(rng: random.Random, space: SteerSearchSpace) -> float:
    lo, hi = space.coeff_range
    if lo == hi:
        return lo
    if space.coeff_scale == "log" and lo > 0:
        x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        x = rng.uniform(lo, hi)
    return clip_coeff(space, x)


def schedule(rng: random.Random, space: SteerSearchSpace, exclude: str | None = None) -> dict[str, Any] | None:
    """A schedule dict drawn from the space ("none" has probability 1/2 when listed)."""
    from autosteer.steering.schedules import SCHEDULE_KINDS

    names = [s for s in space.schedules if s != exclude]
    if not names:
        return None
    if "none" in names and len(names) > 1:
        kind = "none" if rng.random() < 0.5 else rng.choice([s for s in names if s != "none"])
    else:
        kind = rng.choice(names)
    if kind == "none":
        return None
    out: dict[str, Any] = {"type": kind}
    for p in SCHEDULE_KINDS[kind].params:
        lo, hi = space.schedule_ranges[kind][p.name]
        if p.kind == "int":
            out[p.name] = rng.randint(lo, hi)
        else:
            out[p.name] = min(max(round_sig(rng.uniform(lo, hi), 3), lo), hi)
    return out


def layer_bounds(space: SteerSearchSpace) -> tuple[int, int]:
    """The space's ``layer_range``; a :class:`SearchSpaceError` when it is not resolved yet."""
    if space.layer_range is None:
        raise SearchSpaceError("the search space has no layer_range yet; call space.resolve(num_layers) first")
    return space.layer_range


def random_vector(
    rng: random.Random, space: SteerSearchSpace, taken: set[tuple[int, str | Concept]]
) -> SteerVector | None:
    lo, hi = layer_bounds(space)
    for _ in range(20):
        layer = rng.randint(lo, hi)
        text, sign = rng.choice(space.signed_texts)
        if (layer, text) not in taken:
            return SteerVector(layer, sign * magnitude(rng, space), text, schedule(rng, space))
    return None


def random_candidate(rng: random.Random, space: SteerSearchSpace) -> SteerCandidate | None:
    """1..max_vectors vectors, each with a random layer, signed text, magnitude and schedule;
    and, when the space has system prompts, one of ``(None, *system_prompts)``."""
    n = rng.randint(1, space.max_vectors)
    vecs: list[SteerVector] = []
    taken: set[tuple[int, str | Concept]] = set()
    for _ in range(n):
        v = random_vector(rng, space, taken)
        if v is None:
            break
        vecs.append(v)
        taken.add((v.layer_idx, v.text))
    if not vecs:
        return None
    # no draw without system prompts: steering-only searches propose what they always did
    system = rng.choice((None, *space.system_prompts)) if space.system_prompts else None
    return SteerCandidate(tuple(vecs), system, space.prompt_role)


def prompt_only(space: SteerSearchSpace) -> list[SteerCandidate]:
    """Each system prompt of the space alone (no vectors): prompting alone, the reference a
    prompt + steering search is reported beside."""
    return [SteerCandidate((), s, space.prompt_role) for s in space.system_prompts]


def perturb(rng: random.Random, space: SteerSearchSpace, best: SteerCandidate) -> SteerCandidate | None:
    """``best`` changed by one move drawn uniformly from those that apply: shift a layer by
    1 or 2, scale a coefficient by 1.1..2 up or down, swap a text (the sign follows the
    text's list), change or drop a schedule, add a random vector, remove a vector, and with
    system prompts in the space, swap the system prompt (or drop it)."""
    vecs = list(best.vectors)
    system = best.system
    moves = []
    lo, hi = layer_bounds(space)
    if vecs:
        if lo < hi:
            moves.append("shift_layer")
        if space.coeff_range[0] < space.coeff_range[1]:
            moves.append("scale_coeff")
        if len(space.signed_texts) > 1:
            moves.append("swap_text")
        if space.schedules != ("none",):
            moves.append("change_schedule")
    if len(vecs) < space.max_vectors:
        moves.append("add_vector")
    if len(vecs) > 1:
        moves.append("remove_vector")
    systems = [s for s in (None, *space.system_prompts) if s != system and (vecs or s is not None)]
    if space.system_prompts and systems:
        moves.append("swap_system")
    if not moves:
        return None
    move = rng.choice(moves)
    if move == "swap_system":
        return SteerCandidate(tuple(vecs), rng.choice(systems), space.prompt_role)
    if move == "add_vector" and not vecs:  # prompting alone gets its first vector
        w = random_vector(rng, space, set())
        return None if w is None else SteerCandidate((w,), system, space.prompt_role)
    i = rng.randrange(len(vecs))
    v = vecs[i]
    taken = {(w.layer_idx, w.text) for j, w in enumerate(vecs) if j != i}
    if move == "shift_layer":
        layer = min(max(v.layer_idx + rng.choice((-2, -1, 1, 2)), lo), hi)
        if (layer, v.text) in taken:
            return None
        vecs[i] = SteerVector(layer, v.coeff, v.text, v.schedule)
    elif move == "scale_coeff":
        factor = math.exp(rng.uniform(math.log(1.1), math.log(2.0)))
        if rng.random() < 0.5:
            factor = 1.0 / factor
        sign = 1.0 if v.coeff > 0 else -1.0
        vecs[i] = SteerVector(v.layer_idx, sign * clip_coeff(space, abs(v.coeff) * factor), v.text, v.schedule)
    elif move == "swap_text":
        sign = 1 if v.coeff > 0 else -1
        choices = [ts for ts in space.signed_texts if ts != (v.text, sign)]
        text, new_sign = rng.choice(choices)
        if (v.layer_idx, text) in taken:
            return None
        vecs[i] = SteerVector(v.layer_idx, new_sign * abs(v.coeff), text, v.schedule)
    elif move == "change_schedule":
        current = "none" if v.schedule is None else v.schedule["type"]
        # "change" re-draws the parameters of the same kind or switches kind;
        # "drop" is the "none" outcome of the draw
        vecs[i] = SteerVector(v.layer_idx, v.coeff, v.text, schedule(rng, space))
        if vecs[i].key() == v.key() and current == "none":
            vecs[i] = SteerVector(v.layer_idx, v.coeff, v.text, schedule(rng, space, exclude="none"))
    elif move == "add_vector":
        w = random_vector(rng, space, {(x.layer_idx, x.text) for x in vecs})
        if w is None:
            return None
        vecs.append(w)
    elif move == "remove_vector":
        del vecs[i]
    return SteerCandidate(tuple(vecs), system, space.prompt_role)
