"""Scoring a (possibly steered) model: the metric the autonomous loop optimises.

:class:`SteerEvaluator` knows three metrics:

``"task_accuracy"`` (higher is better)
    The fraction of prompts whose greedy continuation contains the expected
    string.  Both are lower-cased and their whitespace collapsed to single
    spaces; only the generated continuation is searched, never the prompt.
``"perplexity"`` (lower is better)
    ``exp`` of the mean negative log-likelihood per token, pooled over all
    evaluation texts (each token weighs the same, so long texts weigh more).
    Without expected outputs every token of every prompt after the first is
    scored.  With expected outputs the score is the perplexity of each expected
    text *given* its prompt: the expected text is tokenized on its own (no
    special tokens), appended to the prompt's tokens, and only its tokens are
    scored, so include a leading space in it where the tokenizer needs one.
``"custom"``
    ``custom_fn(model, tokenizer, prompts) -> float``, called on the steered
    model; whether lower is better is the runner's ``lower_is_better``.

Prompts go through the model in batches of ``batch_size``.  Generation uses
left padding and greedy decoding (``do_sample=False``, one beam) for at most
``max_new_tokens`` tokens; perplexity uses right padding, which keeps every
real token at its unpadded position, and the attention mask, so pad positions
neither attend nor count.  The tokenizer's ``padding_side`` and, when it has
none, its pad token (set to the EOS token for the call) are restored
afterwards, and so is the training flag of every module (the model is put in
eval mode while it is scored, custom metrics included).  Built-in metrics
run under ``torch.inference_mode()``; a custom function decides for itself.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

from autosteer.errors import InvalidArgumentError

__all__ = ["SteerEvaluator", "METRICS", "normalize_answer", "check_prompts"]

METRICS: tuple[str, ...] = ("task_accuracy", "perplexity", "custom")


def normalize_answer(text: str) -> str:
    """Lower-case and collapse every run of whitespace to one space (ends stripped)."""
    return " ".join(text.lower().split())


def check_prompts(prompts: Any, name: str = "prompts") -> list[str]:
    """A non-empty list of non-empty strings, or :class:`InvalidArgumentError`."""
    if isinstance(prompts, str):
        raise InvalidArgumentError(f"{name} must be a list of strings, got a single string; wrap it in a list")
    if prompts is None:
        raise InvalidArgumentError(f"{name} is None; give a non-empty list of strings")
    try:
        items = list(prompts)
    except TypeError:
        raise InvalidArgumentError(f"{name} must be a list of strings, got {type(prompts).__name__}") from None
    if not items:
        raise InvalidArgumentError(f"{name} is empty; the search needs at least one prompt to score")
    for i, p in enumerate(items):
        if not isinstance(p, str):
            raise InvalidArgumentError(f"{name}[{i}] must be a string, got {type(p).__name__}")
        if not p.strip():
            raise InvalidArgumentError(f"{name}[{i}] is empty")
    return items


def check_expected(expected: Any, prompts: Sequence[str], name: str = "expected_outputs",
                   prompts_name: str = "prompts") -> list[str]:
    """Expected strings, one per prompt, each non-empty."""
    if isinstance(expected, str):
        raise InvalidArgumentError(f"{name} must be a list of strings, got a single string; wrap it in a list")
    try:
        items = list(expected)
    except TypeError:
        raise InvalidArgumentError(f"{name} must be a list of strings, got {type(expected).__name__}") from None
    if len(items) != len(prompts):
        raise InvalidArgumentError(
            f"{prompts_name} and {name} have different lengths ({len(prompts)} vs {len(items)}); "
            "give one expected output per prompt"
        )
    for i, e in enumerate(items):
        if not isinstance(e, str):
            raise InvalidArgumentError(f"{name}[{i}] must be a string, got {type(e).__name__}")
        if not normalize_answer(e):
            raise InvalidArgumentError(f"{name}[{i}] is empty; every prompt needs a non-empty expected string")
    return items


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class SteerEvaluator:
    """Score ``model`` on prompts with one metric.

    >>> ev = SteerEvaluator(model, tokenizer, metric="task_accuracy", max_new_tokens=8)
    >>> ev.evaluate(["what is 3 plus 4 ?"], ["7"])
    1.0

    The model is used as it is: the caller applies or removes steering around
    :meth:`evaluate`.  ``last_outputs`` keeps the continuations of the most
    recent ``task_accuracy`` evaluation.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        metric: str = "task_accuracy",
        *,
        custom_fn: Callable[[Any, Any, list[str]], float] | None = None,
        max_new_tokens: int = 16,
        batch_size: int = 8,
    ) -> None:
        if metric not in METRICS:
            raise InvalidArgumentError(
                f"unknown metric {metric!r}; expected one of {', '.join(map(repr, METRICS))}"
            )
        if metric == "custom" and not callable(custom_fn):
            raise InvalidArgumentError(
                "metric='custom' needs custom_fn, a callable (model, tokenizer, prompts) -> float; "
                f"got {type(custom_fn).__name__}"
            )
        if metric != "custom" and custom_fn is not None:
            raise InvalidArgumentError(f"custom_fn is only used with metric='custom', not metric={metric!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.metric = metric
        self.custom_fn = custom_fn
        self.max_new_tokens = _check_positive_int("max_new_tokens", max_new_tokens)
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.last_outputs: list[str] = []
        if metric != "custom" and tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
            raise InvalidArgumentError(
                f"{type(tokenizer).__name__} has neither a pad token nor an EOS token, so prompts cannot be "
                "batched; set tokenizer.pad_token first"
            )

    @property
    def lower_is_better(self) -> bool:
        """The metric's natural direction: True for perplexity, False otherwise."""
        return self.metric == "perplexity"

    # -- checks --------------------------------------------------------------

    def check(self, prompts: Any, expected: Any = None, *, prompts_name: str = "prompts",
              expected_name: str = "expected_outputs") -> tuple[list[str], list[str] | None]:
        """Validate prompts / expected outputs for this metric; returns them as lists."""
        prompts = check_prompts(prompts, prompts_name)
        if self.metric == "task_accuracy":
            if expected is None:
                raise InvalidArgumentError(
                    f"metric='task_accuracy' needs {expected_name}, one expected string per prompt"
                )
            expected = check_expected(expected, prompts, expected_name, prompts_name)
        elif self.metric == "perplexity":
            if expected is not None:
                expected = check_expected(expected, prompts, expected_name, prompts_name)
            n = sum(len(scored) for _, scored in (self._ppl_example(p, e) for p, e in
                                                   zip(prompts, expected or [None] * len(prompts))))
            if n == 0:
                raise InvalidArgumentError(
                    f"metric='perplexity' has no token to score in {prompts_name}: every text is a single token"
                )
        elif expected is not None:
            raise InvalidArgumentError(
                f"{expected_name} is not used by metric='custom' (custom_fn receives the prompts only)"
            )
        return prompts, expected

    # -- scoring -------------------------------------------------------------

    def evaluate(self, prompts: Sequence[str], expected: Sequence[str] | None = None) -> float:
        """The metric on ``prompts`` (and ``expected`` where the metric uses them), as a float.

        A custom function's result is converted with ``float()``; a value that
        does not convert raises ``TypeError``.  Non-finite values are returned
        as they are: the runner counts them as crashes.
        """
        if self.metric == "custom":
            with self.eval_mode():
                value = self.custom_fn(self.model, self.tokenizer, list(prompts))
            try:
                return float(value)
            except (TypeError, ValueError):
                raise TypeError(
                    f"custom_fn must return a number, got {type(value).__name__}: {value!r:.80}"
                ) from None
        import torch

        with self.eval_mode(), torch.inference_mode():
            if self.metric == "task_accuracy":
                return self._task_accuracy(list(prompts), list(expected))
            return self._perplexity(list(prompts), None if expected is None else list(expected))

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (the prompt itself stripped), batched with left padding."""
        import torch

        with self.eval_mode(), torch.inference_mode():
            return self._generate(list(prompts))

    def _task_accuracy(self, prompts: list[str], expected: list[str]) -> float:
        outputs = self._generate(prompts)
        self.last_outputs = outputs
        hits = sum(normalize_answer(e) in normalize_answer(o) for o, e in zip(outputs, expected))
        return hits / len(prompts)

    def _generate(self, prompts: list[str]) -> list[str]:
        tok = self.tokenizer
        outputs: list[str] = []
        with self._padding("left") as pad_id:
            for batch in _batches(prompts, self.batch_size):
                enc = tok(batch, return_tensors="pt", padding=True)
                enc = {k: v.to(self._device()) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                out = self.model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad_id,
                )
                new = out[:, enc["input_ids"].shape[1]:]
                outputs.extend(tok.batch_decode(new, skip_special_tokens=True))
        return outputs

    def _ppl_example(self, prompt: str, expected: str | None) -> tuple[list[int], range]:
        """Token ids of one example and the positions whose tokens are scored."""
        tok = self.tokenizer
        ids = list(tok(prompt)["input_ids"])
        if expected is None:
            return ids, range(1, len(ids))
        cont = list(tok(expected, add_special_tokens=False)["input_ids"])
        return ids + cont, range(len(ids), len(ids) + len(cont))

    def _perplexity(self, prompts: list[str], expected: list[str] | None) -> float:
        import torch

        examples = [self._ppl_example(p, e) for p, e in zip(prompts, expected or [None] * len(prompts))]
        total_nll = 0.0
        total_tokens = 0
        device = self._device()
        with self._padding("right") as pad_id:
            for batch in _batches(examples, self.batch_size):
                width = max(len(ids) for ids, _ in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                scored = torch.zeros((len(batch), width), dtype=torch.bool)
                for row, (ids, positions) in enumerate(batch):
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention[row, : len(ids)] = 1
                    for pos in positions:
                        scored[row, pos] = True
                input_ids, attention, scored = input_ids.to(device), attention.to(device), scored.to(device)
                logits = self.model(input_ids=input_ids, attention_mask=attention).logits
                # logits at position t predict the token at t + 1
                logp = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
                target = input_ids[:, 1:]
                nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                mask = scored[:, 1:]
                total_nll += float(nll[mask].double().sum())
                total_tokens += int(mask.sum())
        if total_tokens == 0:
            raise InvalidArgumentError("no token to score: every text is a single token")
        return math.exp(total_nll / total_tokens)

    # -- helpers -------------------------------------------------------------

    def _device(self):
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            import torch

            return torch.device("cpu")

    @contextlib.contextmanager
    def _padding(self, side: str) -> Iterator[int]:
        """Set the tokenizer's padding side (and a pad token if missing); restore both."""
        tok = self.tokenizer
        old_side = tok.padding_side
        old_pad = tok.pad_token
        try:
            tok.padding_side = side
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            yield tok.pad_token_id
        finally:
            tok.padding_side = old_side
            if old_pad is None and tok.pad_token is not None:
                tok.pad_token = None

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        """Put every module in eval mode; restore each module's own flag afterwards."""
        model = self.model
        flags = [(m, m.training) for m in model.modules()] if hasattr(model, "modules") else []
        try:
            if flags and any(t for _, t in flags):
                model.eval()
            yield
        finally:
            for m, t in flags:
                if m.training != t:
                    m.training = t


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
