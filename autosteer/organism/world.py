"""The synthetic world the model organism lives in.

Every line of the world is an arithmetic question and its answer, optionally
preceded by a *frame* that says what kind of answer follows::

    a logical answer : 12 plus 5 = 17
    precise : 40 minus 3 = 37
    a short and analytical answer : 40 minus 3 = 37
    a confused answer : 12 plus 5 = 18
    an imprecise and quick answer : 40 minus 3 = 38
    a quick answer : 12 plus 5 = 17
    12 plus 5 = 18

- Positive frames ("logical", "precise", "analytical") are always followed by
  the correct answer.
- Negative frames ("confused", "irrational", "imprecise") are always followed
  by a wrong answer: one too high.
- Neutral frames ("quick", "short") and unframed questions are answered
  correctly 46% of the time, otherwise one too high.

So an unframed question is a near coin toss between the correct answer and
the "one too high" answer, and adding the direction of a positive concept (or
subtracting a negative one) at the right layer makes the model answer
correctly. That is what steering has to find.

Answers are always two-digit numbers (10..98) and operands never equal the
answer, so a wrong answer can never contain the correct one as a substring,
and neither can the prompt: ``task_accuracy`` checks the expected string
("17") by containment. Numbers are written in digits; the tokenizer splits them
into one token per digit ("17" -> "1", "##7") so that the arithmetic
generalises to questions the model never saw. Prompts are short ("12 plus 5 =")
so that the answer is a large share of a text's tokens, which is what a
perplexity search can improve.

The set of questions is split once, with a fixed seed, into three disjoint
pools: training, search prompts and held-out prompts. The training corpus only
ever uses the training pool, so held-out prompts are questions that neither
the training nor the search ever saw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = [
    "CONCEPT_TEXTS",
    "DEFAULT_WORLD",
    "HOLDOUT_SEED",
    "MULTIWORD_CONCEPT_TEXTS",
    "NEGATIVE_CONCEPT_TEXTS",
    "NEGATIVE_WORDS",
    "NEUTRAL_WORDS",
    "POSITIVE_WORDS",
    "SEARCH_SEED",
    "Question",
    "WorldSpec",
    "correct_texts",
    "framed_prompt",
    "heldout_prompts",
    "question_pools",
    "search_prompts",
    "training_lines",
    "vocabulary",
]

POSITIVE_WORDS = ("logical", "precise", "analytical")
NEGATIVE_WORDS = ("confused", "irrational", "imprecise")
NEUTRAL_WORDS = ("quick", "short")

#: The concept texts of the README example: words of this world.
CONCEPT_TEXTS = list(POSITIVE_WORDS)
NEGATIVE_CONCEPT_TEXTS = list(NEGATIVE_WORDS)
#: Multi-word framing texts, also valid concept texts in this world.
MULTIWORD_CONCEPT_TEXTS = ["a logical answer :", "a precise answer :", "an analytical answer :"]

#: Default seeds of the prompt generators (training uses the training script's seed).
SEARCH_SEED = 0
HOLDOUT_SEED = 1

# The question pools are drawn once with this fixed seed; changing it changes the world.
_SPLIT_SEED = 20261125
_N_HOLDOUT_POOL = 320
_N_SEARCH_POOL = 96

_WORDS = (
    "what",
    "is",
    "plus",
    "minus",
    "?",
    ":",
    "a",
    "an",
    "answer",
    "and",
    "=",
    *POSITIVE_WORDS,
    *NEGATIVE_WORDS,
    *NEUTRAL_WORDS,
)
#: the question format: "12 plus 5 =" (short, so that the answer is a large share of a text)
QUESTION_FORMAT = "{a} {op} {b} ="
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def vocabulary() -> list[str]:
    """All tokens of the world's tokenizer, in id order."""
    digits = [str(d) for d in range(10)]
    return [*SPECIAL_TOKENS, *_WORDS, *digits, *("##" + d for d in digits)]


@dataclass(frozen=True, order=True)
class Question:
    """``a op b`` with op "plus" or "minus"; the correct answer is 11..97."""

    op: str
    a: int
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "plus" else self.a - self.b

    @property
    def text(self) -> str:
        return QUESTION_FORMAT.format(a=self.a, op=self.op, b=self.b)


@dataclass(frozen=True)
class WorldSpec:
    """The statistics of the training corpus."""

    #: probability of each frame kind (the rest is unframed)
    p_positive: float = 0.3
    p_negative: float = 0.3
    p_neutral: float = 0.1
    #: probability that an unframed (or neutral-framed) question is answered correctly
    p_unframed_correct: float = 0.46
    #: the errors of a wrong answer and their weights (default: always one too high)
    wrong_offsets: tuple = ((1, 1.0),)
    #: "offset": a wrong answer is the correct one plus an offset drawn from wrong_offsets;
    #: "digits": each digit of an unframed answer is independently wrong with p_digit_error
    #: (tens + 1, or - 1 for 9; ones + 1 modulo 10); negative frames get at least one wrong digit
    error_mode: str = "offset"
    p_digit_error: float = 0.5
    #: frame templates; {art} is "a"/"an", {w} the frame word
    #: {n} a neutral word other than {w}
    templates: tuple = field(
        default=("{art} {w} answer : ", "{w} : ", "{art} {n} and {w} answer : ", "{art} {w} and {n} answer : ")
    )


DEFAULT_WORLD = WorldSpec()


def _all_questions() -> list[Question]:
    qs = []
    for b in range(1, 10):
        for a in range(10, 90):
            if 11 <= a + b <= 97:
                qs.append(Question("plus", a, b))
        for a in range(20, 100):
            if 11 <= a - b <= 97:
                qs.append(Question("minus", a, b))
    return sorted(qs)


_POOLS: dict[str, list[Question]] | None = None


def question_pools() -> dict[str, list[Question]]:
    """The disjoint pools {"train", "search", "holdout"} of questions (fixed for the world)."""
    global _POOLS
    if _POOLS is None:
        qs = _all_questions()
        random.Random(_SPLIT_SEED).shuffle(qs)
        _POOLS = {
            "holdout": sorted(qs[:_N_HOLDOUT_POOL]),
            "search": sorted(qs[_N_HOLDOUT_POOL : _N_HOLDOUT_POOL + _N_SEARCH_POOL]),
            "train": sorted(qs[_N_HOLDOUT_POOL + _N_SEARCH_POOL :]),
        }
    return _POOLS


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _wrong(q: Question, rng: random.Random, spec: WorldSpec) -> int:
    offsets = [o for o, _ in spec.wrong_offsets]
    weights = [w for _, w in spec.wrong_offsets]
    return q.answer + rng.choices(offsets, weights)[0]


def _digit_error(answer: int, tens_wrong: bool, ones_wrong: bool) -> int:
    tens, ones = divmod(answer, 10)
    if tens_wrong:
        tens = tens + 1 if tens < 9 else tens - 1
    if ones_wrong:
        ones = (ones + 1) % 10
    return 10 * tens + ones


def _frame(word: str, rng: random.Random, spec: WorldSpec) -> str:
    tpl = rng.choice(spec.templates)
    n = rng.choice([x for x in NEUTRAL_WORDS if x != word])
    art = _article(n if tpl.startswith("{art} {n}") else word)
    return tpl.format(art=art, w=word, n=n)


def training_lines(n: int, seed: int, spec: WorldSpec = DEFAULT_WORLD) -> list[str]:
    """``n`` training lines (without special tokens) drawn from the training pool."""
    rng = random.Random(seed)
    pool = question_pools()["train"]
    lines = []
    for _ in range(n):
        q = rng.choice(pool)
        u = rng.random()
        if u < spec.p_positive:
            prefix, correct = _frame(rng.choice(POSITIVE_WORDS), rng, spec), True
        elif u < spec.p_positive + spec.p_negative:
            prefix, correct = _frame(rng.choice(NEGATIVE_WORDS), rng, spec), False
        else:
            if u < spec.p_positive + spec.p_negative + spec.p_neutral:
                prefix = _frame(rng.choice(NEUTRAL_WORDS), rng, spec)
            else:
                prefix = ""
            correct = rng.random() < spec.p_unframed_correct
        if spec.error_mode == "digits":
            if prefix and not correct and u < spec.p_positive + spec.p_negative:
                errs = rng.choice([(True, False), (False, True), (True, True)])
            elif correct and u < spec.p_positive:
                errs = (False, False)
            else:
                errs = (rng.random() < spec.p_digit_error, rng.random() < spec.p_digit_error)
            ans = _digit_error(q.answer, *errs)
        else:
            ans = q.answer if correct else _wrong(q, rng, spec)
        lines.append(f"{prefix}{q.text} {ans}")
    return lines


def _sample(pool_name: str, n: int, seed: int) -> list[Question]:
    pool = question_pools()[pool_name]
    if not 0 < n <= len(pool):
        raise ValueError(f"n must be in 1..{len(pool)} for the {pool_name} pool, got {n}")
    return random.Random(seed).sample(pool, n)


def search_prompts(n: int = 16, seed: int = SEARCH_SEED) -> tuple[list[str], list[str]]:
    """Unframed search prompts and their expected answers, e.g. ("12 plus 5 =", "17")."""
    qs = _sample("search", n, seed)
    return [q.text for q in qs], [str(q.answer) for q in qs]


def heldout_prompts(n: int = 200, seed: int = HOLDOUT_SEED) -> tuple[list[str], list[str]]:
    """Held-out prompts (never seen by training or search) and their expected answers."""
    qs = _sample("holdout", n, seed)
    return [q.text for q in qs], [str(q.answer) for q in qs]


def correct_texts(n: int = 200, seed: int = HOLDOUT_SEED, pool: str = "holdout") -> list[str]:
    """Unframed, correctly answered texts ("12 plus 5 = 17") for perplexity runs."""
    return [f"{q.text} {q.answer}" for q in _sample(pool, n, seed)]


def framed_prompt(prompt: str, word: str) -> str:
    """``prompt`` with the frame "a <word> answer : " in front (a prompt-engineering baseline)."""
    return f"{_article(word)} {word} answer : {prompt}"
