"""Scoring a (possibly steered) model: the batched passes every metric is built from.

:class:`SteerEvaluator` runs one metric of the registry (:mod:`autosteer.search.metrics`)
on prompts.  It owns tokenisation, padding, batching, greedy generation and
teacher-forced scoring; the metric decides what to measure.  Given a
:class:`~autosteer.Steer` and several candidates, it evaluates them all in
the same batched passes: each prompt appears once per candidate, and each
batch row is steered by its own candidate (``Steer.rows``).

Batching: prompts go through the model ``batch_size`` at a time (times the
number of candidates).  Generation uses left padding and greedy decoding
(``do_sample=False``, one beam) for at most ``max_new_tokens`` tokens, each
row until it produces EOS.  With ``early_stop=True`` (the runner's setting) a
row also stops once its expected answer has appeared, and the batch stops
when every row has: that never changes a score, but the continuations in
``last_outputs`` then end where the answer appeared.  Scoring uses right padding, which keeps every real token at its
unpadded position, and the attention mask, so pad positions neither attend
nor count.  The tokenizer's ``padding_side`` and pad token are never
changed; the training flag of every module is restored after scoring (the
model is put in eval mode while it is scored, custom metrics included).
Built-in metrics run under ``torch.inference_mode()``; a custom function
decides for itself.  torch runs on the thread count of :mod:`autosteer.search._threads`
while the evaluator works (``threads=`` overrides it).  A pass whose logits are not finite (NaN or inf: steering
far too strong for the storage dtype) raises :class:`NonFiniteOutputError`
instead of producing a score.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from autosteer._checks import check_bool, check_int, check_list, is_int, is_real
from autosteer._checks import describe as _describe
from autosteer.errors import AutoSteerError, InvalidArgumentError
from autosteer.search._threads import check_threads, using_threads
from autosteer.search.metrics import (
    CustomMetric,
    Metric,
    MetricJob,
    MetricResult,
    as_metric,
    compile_pattern,
    normalize_answer,
)

__all__ = [
    "NonFiniteOutputError",
    "SteerEvaluator",
    "check_expected",
    "check_prompts",
    "compile_pattern",
    "normalize_answer",
]


class NonFiniteOutputError(AutoSteerError, ArithmeticError):
    """The model produced NaN or infinite logits while it was scored."""


def check_prompts(prompts: Any, name: str = "prompts", chat: bool = False) -> list:
    """A non-empty list of non-empty strings (or, with ``chat``, chat conversations:
    lists of ``{"role", "content"}`` messages), or :class:`InvalidArgumentError`."""
    from autosteer.steering.concept import check_conversation

    if prompts is None:
        raise InvalidArgumentError(f"{name} is None; give a non-empty list of strings")
    items = check_list(name, prompts, "strings or chat conversations" if chat else "strings")
    if not items:
        raise InvalidArgumentError(f"{name} is empty; the search needs at least one prompt to score")
    out: list[Any] = []  # strings, or conversations with chat
    for i, p in enumerate(items):
        if isinstance(p, (list, tuple)):
            if not chat:
                raise InvalidArgumentError(
                    f"{name}[{i}] is a chat conversation: give chat=True (--chat) to render it with the "
                    "tokenizer's chat template"
                )
            check_conversation(p, f"{name}[{i}]")
            out.append([{"role": m["role"], "content": m["content"]} for m in p])
            continue
        if not isinstance(p, str):
            raise InvalidArgumentError(f"{name}[{i}] must be a string, got {_describe(p)}")
        if not p.strip():
            raise InvalidArgumentError(f"{name}[{i}] is empty")
        out.append(p)
    return out


def check_expected(
    expected: Any, prompts: Sequence[Any], name: str = "expected_outputs", prompts_name: str = "prompts"
) -> list[str]:
    """Expected strings, one per prompt, each non-empty."""
    items = check_list(name, expected)
    if len(items) != len(prompts):
        raise InvalidArgumentError(
            f"{prompts_name} and {name} have different lengths ({len(prompts)} vs {len(items)}); "
            "give one expected output per prompt"
        )
    for i, e in enumerate(items):
        if not isinstance(e, str):
            raise InvalidArgumentError(f"{name}[{i}] must be a string, got {_describe(e)}")
        if not normalize_answer(e):
            raise InvalidArgumentError(f"{name}[{i}] is empty; every prompt needs a non-empty expected string")
    return items


class SteerEvaluator:
    """Score ``model`` on prompts with one metric.

    ``metric``: a :class:`~autosteer.search.metrics.Metric` object (with its
    options), a metric name (its defaults) or a callable (a custom metric).

    >>> ev = SteerEvaluator(model, tokenizer, metric="task_accuracy", max_new_tokens=8)
    >>> ev.evaluate(["what is 3 plus 4 ?"], ["7"])
    1.0

    The model is used as it is; the caller applies or removes steering around
    :meth:`evaluate`, or lets :meth:`evaluate_candidates` apply candidates to a
    ``Steer`` (one batched pass for all of them).  ``last_outputs`` keeps the
    continuations of the most recent generating evaluation.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        metric: Metric | str | Callable = "task_accuracy",
        *,
        max_new_tokens: int = 16,
        batch_size: int = 8,
        early_stop: bool = False,
        threads: int | None = None,
        chat: bool = False,
    ) -> None:
        spec = as_metric(metric)
        if tokenizer is None:
            raise InvalidArgumentError("tokenizer is None; give the model's tokenizer (e.g. from AutoTokenizer)")
        self.model = model
        self.tokenizer = tokenizer
        self.spec: Metric = spec
        self.metric = spec.name
        self.max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.early_stop = check_bool("early_stop", early_stop)
        self.threads = check_threads(threads)
        chat = check_bool("chat", chat)
        if chat and not getattr(tokenizer, "chat_template", None):
            raise InvalidArgumentError(
                f"chat=True renders prompts with the tokenizer's chat template, but {type(tokenizer).__name__} "
                "has none (tokenizer.chat_template is empty)"
            )
        self.chat = chat
        spec.check(self)
        self._reference: dict[str, tuple[float, tuple[float, ...]]] = {}
        self._keep_mask_ok: bool | None = None  # does the model take logits_to_keep as a per-row mask?
        self._keep_last_ok: bool | None = None  # does it take logits_to_keep=1?
        self._prefix_ok: bool | None = None  # does sharing a prefix's key/value cache give the full pass's NLL?
        self.last_outputs: list[str] = []
        if spec.batched:
            self._batch_pad_id()

    @property
    def lower_is_better(self) -> bool:
        """The metric's natural direction (False for a custom metric)."""
        return bool(self.spec.lower_is_better)

    # -- checks --------------------------------------------------------------

    def check(
        self,
        prompts: Any,
        expected: Any = None,
        *,
        prompts_name: str = "prompts",
        expected_name: str = "expected_outputs",
    ) -> tuple[list[str], list[str] | None]:
        """Validate prompts / expected outputs for this metric; returns them as lists."""
        prompts = check_prompts(prompts, prompts_name, self.chat)
        need = self.spec.expected
        if need == "required" and expected is None:
            raise InvalidArgumentError(f"metric={self.metric!r} needs {expected_name}, one expected string per prompt")
        if need == "unused" and expected is not None:
            raise InvalidArgumentError(
                f"{expected_name} is not used by metric={self.metric!r} (it scores the prompts only)"
            )
        if expected is not None:
            expected = check_expected(expected, prompts, expected_name, prompts_name)
        if self.metric == "perplexity":
            n = sum(
                len(scored)
                for _, scored in (self._ppl_example(p, e) for p, e in zip(prompts, expected or [None] * len(prompts)))
            )
            if n == 0:
                raise InvalidArgumentError(
                    f"metric='perplexity' has no token to score in {prompts_name}: every text is a single token"
                )
        return prompts, expected

    # -- scoring -------------------------------------------------------------

    def evaluate(self, prompts: Sequence[str], expected: Sequence[str] | None = None) -> float:
        """The metric on ``prompts`` (and ``expected`` where the metric uses them), as a float.

        The inputs are checked before any work (:meth:`check`): a list of
        non-empty strings (conversations with ``chat``), and one expected string
        per prompt where the metric uses them; an error names ``prompts[i]`` or
        ``expected_outputs``.  A custom function's result is converted with ``float()`` (or averaged
        when it returns one number per prompt); anything else raises
        ``TypeError``.  Non-finite values are returned as they are: the runner
        counts them as crashes.
        """
        return self.evaluate_result(prompts, expected).value

    def evaluate_result(self, prompts: Sequence[str], expected: Sequence[str] | None = None) -> MetricResult:
        """Like :meth:`evaluate`, with the per-prompt values and outputs (a :class:`MetricResult`)."""
        prompts, expected = self.check(prompts, expected)
        return self._run(MetricJob(prompts, expected))[0]

    def evaluate_candidates(
        self,
        steer,
        candidates: Sequence[Any],
        prompts: Sequence[str],
        expected: Sequence[str] | None = None,
        indexes: Sequence[int] | None = None,
    ) -> list[MetricResult]:
        """One :class:`MetricResult` per candidate, each scored with that candidate applied to ``steer``.

        Metrics that allow it score every candidate in the same batched passes
        (each row steered by its own candidate); the others apply one
        candidate after another.  The results equal those of evaluating the
        candidates one by one.  The prompts and expected outputs are checked
        first, as in :meth:`evaluate`.

        ``indexes`` (increasing positions in ``prompts``): score only those
        prompts, as part of the whole set (a screening stage; the metric must be
        ``mergeable``): per-prompt values are those of scoring the whole set,
        and :meth:`Metric.merge` joins the results of consecutive parts into it.
        """
        candidates = list(candidates)
        prompts, expected = self.check(prompts, expected)
        if not candidates:
            return []
        context: list[Any] | None = None
        positions: tuple[int, ...] | None = None
        if indexes is not None:
            positions = _check_indexes(indexes, len(prompts))
            if not self.spec.mergeable:
                raise InvalidArgumentError(
                    f"metric {self.metric!r} cannot score part of a prompt set (it is not mergeable); give indexes=None"
                )
            context = prompts
            prompts = [context[i] for i in positions]
            expected = None if expected is None else [expected[i] for i in positions]
        if self.spec.batched:
            return self._run(MetricJob(prompts, expected, candidates, steer, context, positions))
        out = []
        for cand in candidates:
            out.extend(self._run(MetricJob(prompts, expected, [cand], steer, context, positions)))
        return out

    def _run(self, job: MetricJob) -> list[MetricResult]:
        if isinstance(self.spec, CustomMetric):  # a custom function decides about inference mode itself
            with self.eval_mode(), using_threads(self.threads, self.model):
                return self.spec.compute(self, job)
        import torch

        with self.eval_mode(), torch.inference_mode(), using_threads(self.threads, self.model):
            return self.spec.compute(self, job)

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (the prompt itself stripped), batched with left padding."""
        import torch

        prompts = check_list("prompts", prompts)

        with self.eval_mode(), torch.inference_mode(), using_threads(self.threads, self.model):
            return self.generate_groups(MetricJob(prompts, None), early_stop=False)[0]

    # -- batched primitives for metrics -------------------------------------------

    @contextlib.contextmanager
    def _steering(self, job: MetricJob) -> Iterator[None]:
        """Apply the job's candidates (none: the model as it is) for the passes inside."""
        if job.candidates is None:
            yield
            return
        if job.steer is None:
            raise InvalidArgumentError("evaluating candidates needs the Steer to apply them to")
        config = job.candidates[0] if len(job.candidates) == 1 else list(job.candidates)
        with _applied(job.steer, config):
            yield

    def _rows(
        self,
        job: MetricJob,
        items: Sequence[Any],
        batch_size: int | None = None,
        per_group: Sequence[Sequence[Any]] | None = None,
    ) -> Iterator[tuple[list[int], list[Any], Any]]:
        """Batches of (prompt indexes, items, row groups); every candidate's copy of a prompt
        sits in the same batch, candidate-major.  ``per_group``: each candidate's own items
        (its system prompt in them) in place of the shared ``items``."""
        k = job.groups
        size = batch_size or self.batch_size
        for start in range(0, len(items), size):
            idx = list(range(start, min(start + size, len(items))))
            if per_group is None:
                rows = [items[i] for _ in range(k) for i in idx]
            else:
                rows = [per_group[g][i] for g in range(k) for i in idx]
            groups = None if k == 1 else [g for g in range(k) for _ in idx]
            yield idx, rows, groups

    def _per_group(self, job: MetricJob, make: Callable[[Any, int], Any]) -> list[list[Any]] | None:
        """``make(prompt, i)`` for each candidate and prompt, the prompt as that candidate
        generates from it (its system message first); None when no candidate has a system
        prompt (every candidate then shares the same rows)."""
        cands = job.candidates
        if not cands or all(getattr(c, "system", None) is None for c in cands):
            return None
        if not self.chat:
            raise InvalidArgumentError(
                "a candidate has a system prompt, which needs chat=True (the tokenizer's chat template)"
            )
        return [
            [make(c.messages(p) if getattr(c, "system", None) is not None else p, i) for i, p in enumerate(job.prompts)]
            for c in cands
        ]

    @contextlib.contextmanager
    def _row_groups(self, job: MetricJob, groups: list[int] | None) -> Iterator[None]:
        if groups is None:
            yield
            return
        import torch

        with job.steer.rows(torch.tensor(groups, dtype=torch.long)):
            yield

    def generate_groups(
        self, job: MetricJob, stop_when: Sequence[str] | None = None, early_stop: bool | None = None
    ) -> list[list[str]]:
        """Greedy continuations: one list of ``len(prompts)`` texts per candidate group.

        ``stop_when`` (normalised expected strings, one per prompt): with early
        stopping on, a row stops generating once its string has appeared.
        """
        return self.generate_with_ids(job, stop_when, early_stop)[0]

    def generate_with_ids(
        self, job: MetricJob, stop_when: Sequence[str] | None = None, early_stop: bool | None = None
    ) -> tuple[list[list[str]], list[list[list[int]]]]:
        """Like :meth:`generate_groups`, also returning each continuation's token ids (up to and
        including the first EOS, no padding)."""

        early = self.early_stop if early_stop is None else early_stop
        k = job.groups
        encoded = [self._prompt_ids(p) for p in job.prompts]
        per_group = self._per_group(job, lambda p, i: self._prompt_ids(p))
        outputs: list[list[str | None]] = [[None] * len(encoded) for _ in range(k)]
        new_ids: list[list[list[int] | None]] = [[None] * len(encoded) for _ in range(k)]
        pad_id = self._batch_pad_id()
        eos = getattr(self.tokenizer, "eos_token_id", None)
        with self._steering(job):
            for idx, rows, groups in self._rows(job, encoded, per_group=per_group):
                input_ids, attention = _pad(rows, pad_id, "left")
                device = self._device()
                input_ids, attention = input_ids.to(device), attention.to(device)
                width = input_ids.shape[1]
                finite = _FiniteCheck()
                kwargs: dict[str, Any] = {}
                if early and stop_when is not None:
                    wanted = [stop_when[i] for _ in range(k) for i in idx]
                    kwargs["stopping_criteria"] = _stopping([_StopWhenFound(self.tokenizer, width, wanted)])
                with self._row_groups(job, groups):
                    out = self.model.generate(
                        input_ids=input_ids,
                        attention_mask=attention,
                        max_new_tokens=self.max_new_tokens,
                        do_sample=False,
                        num_beams=1,
                        pad_token_id=pad_id,
                        logits_processor=_processors([finite]),
                        **_greedy_overrides(self.model),
                        **kwargs,
                    )
                finite.raise_if_bad("generation")
                gen = out[:, width:].tolist()
                texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
                for r, text in enumerate(texts):
                    g, p = r // len(idx), idx[r % len(idx)]
                    outputs[g][p] = text
                    ids = gen[r]
                    if eos is not None and eos in ids:
                        ids = ids[: ids.index(eos) + 1]
                    new_ids[g][p] = ids
        if k == 1 or job.candidates is None:
            self.last_outputs = list(outputs[0])  # type: ignore[arg-type]
        return outputs, new_ids  # type: ignore[return-value]

    def continuation_nll(
        self, prompts: Sequence[Any], continuations: Sequence[Sequence[Sequence[int]]]
    ) -> list[list[float]]:
        """Mean per-token NLL of each continuation (token ids; one list per candidate group)
        given its prompt, scored by the model with every AutoSteer steering switched off (the
        unsteered model), all groups in the same batched passes."""

        prompt_ids = [self._prompt_ids(p) for p in prompts]
        examples = []
        for group in continuations:
            for ids, cont in zip(prompt_ids, group):
                cont = list(cont)
                examples.append((ids + cont, range(len(ids), len(ids) + len(cont))))
        rows = self.unsteered_nll(examples)
        per_token = [s / n if n else 0.0 for s, n in rows]
        n = len(prompt_ids)
        return [per_token[g * n : (g + 1) * n] for g in range(len(continuations))]

    def unsteered_nll(self, examples: Sequence[tuple[list[int], range]]) -> list[tuple[float, int]]:
        """Per example ``(ids, scored)``: ``(sum of the scored tokens' NLL, tokens scored)``
        under the unsteered model (every AutoSteer hook off), as :meth:`_nll` computes them,
        with each distinct prefix run once.

        The prefix of an example is ``ids[:scored.start - 1]`` (its prompt but the last
        token).  Scoring one answer against several requests, for every candidate of a
        round, repeats each prompt many times (24 rows per prompt in a SmolLM2 round of 8
        candidates), and the prompt is about half of each row.  So each distinct prefix
        runs once, batch 1, and the rows that share it run only their own tokens (the
        prompt's last token, then the scored ones) on a copy of its key/value cache,
        ``batch_size`` rows at a time (benchmarks/shared_prefix_scoring.py measures it).

        The first call checks the shared passes against full passes on one batch; a model
        whose cache cannot be shared this way, or whose results differ by more than
        rounding, is scored with full passes from then on (``_prefix_ok`` says which).
        """
        import torch

        from autosteer.search.metrics import MetricJob
        from autosteer.steering.steer import steering_paused

        out: list[tuple[float, int] | None] = [None] * len(examples)
        plain: list[int] = []
        by_prefix: dict[tuple[int, ...], list[int]] = {}
        for i, (ids, scored) in enumerate(examples):
            if self._prefix_ok is False or scored.start < 2 or not len(scored) or scored.stop > len(ids):
                plain.append(i)
            else:
                by_prefix.setdefault(tuple(ids[: scored.start - 1]), []).append(i)
        with steering_paused(self.model), torch.inference_mode():
            if self._prefix_ok is None and by_prefix:
                prefix, group = next(iter(by_prefix.items()))
                probed = group[: self.batch_size]
                full = self._nll(MetricJob([None] * len(probed), None), [examples[i] for i in probed])[0]
                shared = self._shared_prefix_nll(prefix, [examples[i] for i in probed], probe=True)
                self._prefix_ok = shared is not None and _same_nll(shared, full, self._dtype())
                for i, value in zip(probed, full):  # scored already, by the reference passes
                    out[i] = value
                by_prefix[prefix] = group[len(probed) :]
                if not self._prefix_ok:
                    plain += [i for group in by_prefix.values() for i in group]
                    by_prefix = {}
            for prefix, rows in by_prefix.items():
                for start in range(0, len(rows), self.batch_size):
                    chunk = rows[start : start + self.batch_size]
                    got = self._shared_prefix_nll(prefix, [examples[i] for i in chunk])
                    for i, value in zip(chunk, got):  # type: ignore[arg-type]
                        out[i] = value
            if plain:
                rest = self._nll(MetricJob([None] * len(plain), None), [examples[i] for i in plain])[0]
                for i, value in zip(plain, rest):
                    out[i] = value
        return out  # type: ignore[return-value]

    def _shared_prefix_nll(
        self, prefix: Sequence[int], rows: Sequence[tuple[list[int], range]], probe: bool = False
    ) -> list[tuple[float, int]] | None:
        """The rows' NLL sums, all sharing ``prefix`` (their ids up to the token before the
        first scored one): the prefix runs once, then each row's remaining tokens on a copy of
        its cache.  With ``probe`` (the first try on a model), None when the model does not
        take a cache this way; afterwards its errors are the model's, and propagate."""
        import copy

        import torch

        from autosteer.steering.layers import cache_argument

        failures = (TypeError, ValueError, RuntimeError, IndexError, AttributeError, NotImplementedError)
        device = self._device()
        last = {"logits_to_keep": 1} if self._keep_mask_ok else {}  # the prefix's logits are not used
        try:
            first = self.model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True, **last)
            cache = getattr(first, "cache", None)  # transformers 5.2x; "past_key_values" before
            cache = cache if cache is not None else getattr(first, "past_key_values", None)
            if cache is None or not hasattr(cache, "batch_repeat_interleave"):
                if probe:
                    return None
                raise AutoSteerError(f"{type(self.model).__name__} returned no key/value cache for a prompt")
            cache = copy.deepcopy(cache)
            cache.batch_repeat_interleave(len(rows))
        except failures:
            if probe:
                return None
            raise
        p = len(prefix)
        tails = [list(ids[p:]) for ids, _ in rows]
        input_ids, tail_mask = _pad(tails, self._batch_pad_id(), "right")
        keep = torch.zeros_like(tail_mask, dtype=torch.bool)
        for r, (_, scored) in enumerate(rows):
            for pos in scored:
                keep[r, pos - 1 - p] = True
        attention = torch.cat([torch.ones(len(rows), p, dtype=tail_mask.dtype), tail_mask], dim=1)
        positions = torch.arange(p, p + input_ids.shape[1]).expand(len(rows), -1)
        targets = input_ids[:, 1:][keep[:, :-1]].to(device)
        keep = keep.to(device)
        forward = dict(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            **{cache_argument(self.model): cache},
        )
        try:  # the vocabulary projection only where it scores, when the full pass found that works
            if self._keep_mask_ok:
                logits = self.model(**forward, logits_to_keep=keep).logits
            else:
                logits = self.model(**forward).logits[keep]
        except failures:
            if probe:
                return None
            raise
        if logits.dim() != 2 or logits.shape[0] != int(keep.sum()):
            if probe:
                return None
            raise AutoSteerError(f"scoring on a shared prompt cache gave logits of shape {tuple(logits.shape)}")
        return _row_nll(logits, targets, keep)

    def _dtype(self):
        try:
            return next(self.model.parameters()).dtype
        except (StopIteration, AttributeError):
            return None

    def unsteered_reference(self, prompts: Sequence[Any]) -> tuple[float, tuple[float, ...]]:
        """The unsteered model's own greedy continuations scored by itself: (mean NLL, per prompt);
        computed once per prompt set."""
        from autosteer._canonical import digest
        from autosteer.steering.steer import steering_paused

        key = digest([list(prompts), self.max_new_tokens])
        if key not in self._reference:
            with steering_paused(self.model):
                _, ids = self.generate_with_ids(MetricJob(list(prompts), None), early_stop=False)
            nll = self.continuation_nll(prompts, ids)[0]
            self._reference[key] = (sum(nll) / len(nll), tuple(nll))
        return self._reference[key]

    def remember_reference(self, prompts: Sequence[Any], nll: Sequence[float]) -> None:
        """Record the unsteered model's own continuation NLLs (the baseline measured them)."""
        from autosteer._canonical import digest

        key = digest([list(prompts), self.max_new_tokens])
        self._reference.setdefault(key, (sum(nll) / len(nll), tuple(nll)))

    def next_token_logprobs(self, job: MetricJob):
        """Log-probabilities of the next token after each prompt: per group, a [P, V] float32 tensor."""
        import torch

        k = job.groups
        encoded = [self._prompt_ids(p) for p in job.prompts]
        per_group = self._per_group(job, lambda p, i: self._prompt_ids(p))
        out: list[list[Any]] = [[None] * len(encoded) for _ in range(k)]  # each filled with a tensor
        pad_id = self._batch_pad_id()
        with self._steering(job):
            for idx, rows, groups in self._rows(job, encoded, per_group=per_group):
                input_ids, attention = _pad(rows, pad_id, "left")
                device = self._device()
                with self._row_groups(job, groups):
                    logits = self._last_logits(input_ids.to(device), attention.to(device))
                last = logits[:, -1, :].float()
                if not bool(torch.isfinite(last).all()):
                    raise NonFiniteOutputError("the model produced non-finite logits (NaN or inf) while scoring")
                logp = torch.log_softmax(last, dim=-1).cpu()
                for r in range(len(rows)):
                    out[r // len(idx)][idx[r % len(idx)]] = logp[r]
        return [torch.stack(group) for group in out]

    def _last_logits(self, input_ids, attention):
        """Logits at the last position only where the model takes ``logits_to_keep`` (the vocabulary
        projection of every other position is skipped), else all of them."""
        if self._keep_last_ok is not False:
            try:
                logits = self.model(input_ids=input_ids, attention_mask=attention, logits_to_keep=1).logits
            except (TypeError, ValueError):
                logits = None
            if logits is not None and logits.dim() == 3 and logits.shape[1] == 1:
                self._keep_last_ok = True
                return logits
            self._keep_last_ok = False
        return self.model(input_ids=input_ids, attention_mask=attention).logits

    def _ppl_example(self, prompt: Any, expected: str | None) -> tuple[list[int], range]:
        """Token ids of one example and the positions whose tokens are scored."""
        tok = self.tokenizer
        ids = self._prompt_ids(prompt)
        if expected is None:
            return ids, range(1, len(ids))
        cont = list(tok(expected, add_special_tokens=False)["input_ids"])
        return ids + cont, range(len(ids), len(ids) + len(cont))

    def nll_groups(self, job: MetricJob) -> list[list[tuple[float, int]]]:
        """Teacher-forced NLL: per candidate group, per prompt, ``(sum of token NLLs, tokens scored)``."""
        expected: Sequence[str | None] = job.expected or [None] * len(job.prompts)
        examples = [self._ppl_example(p, e) for p, e in zip(job.prompts, expected)]
        per_group = self._per_group(job, lambda p, i: self._ppl_example(p, expected[i]))
        return self._nll(job, examples, per_group=per_group)

    def _nll(
        self,
        job: MetricJob,
        examples: list[tuple[list[int], range]],
        batch_size: int | None = None,
        per_group: Sequence[Sequence[tuple[list[int], range]]] | None = None,
    ) -> list[list[tuple[float, int]]]:
        """Per group and example, ``(sum of the scored tokens' NLL, tokens scored)``.

        The vocabulary projection runs only at the positions that predict a
        scored token (transformers' ``logits_to_keep`` with a per-row mask,
        where the model takes one), and the NLL is a fused cross-entropy: no
        [rows, positions, vocabulary] log-softmax is ever materialised.
        """
        import torch

        k = job.groups
        out: list[list[tuple[float, int] | None]] = [[None] * len(examples) for _ in range(k)]
        pad_id = self._batch_pad_id()
        with self._steering(job):
            for idx, rows, groups in self._rows(job, examples, batch_size, per_group):
                input_ids, attention = _pad([ids for ids, _ in rows], pad_id, "right")
                # keep[r, t]: the logit at t predicts the scored token at t + 1
                keep = torch.zeros_like(attention, dtype=torch.bool)
                for r, (_, positions) in enumerate(rows):
                    for pos in positions:
                        keep[r, pos - 1] = True
                device = self._device()
                targets = input_ids[:, 1:][keep[:, :-1]].to(device)
                with self._row_groups(job, groups):
                    logits = self._scored_logits(input_ids.to(device), attention.to(device), keep.to(device))
                for r, value in enumerate(_row_nll(logits, targets, keep)):
                    out[r // len(idx)][idx[r % len(idx)]] = value
        return out  # type: ignore[return-value]

    def _scored_logits(self, input_ids, attention, keep):
        """Logits [N, V] at the ``keep`` positions (row-major), computed only there when the
        model supports it."""
        if self._keep_mask_ok is not False:
            try:
                logits = self.model(input_ids=input_ids, attention_mask=attention, logits_to_keep=keep).logits
            except (TypeError, ValueError, RuntimeError, IndexError):
                logits = None
            if logits is not None and logits.dim() == 2 and logits.shape[0] == int(keep.sum()):
                self._keep_mask_ok = True
                return logits
            self._keep_mask_ok = False
        logits = self.model(input_ids=input_ids, attention_mask=attention).logits
        return logits[keep]

    def call_custom(self, fn: Callable[[Any, Any, list], Any], job: MetricJob) -> MetricResult:
        """Run a custom function on the (steered) model; one number, or one per prompt."""
        with self._steering(job):
            value = fn(self.model, self.tokenizer, list(job.prompts))
        if is_real(value):
            return MetricResult(float(value))
        if not isinstance(value, (str, bytes)):
            try:
                values = [float(v) if is_real(v) else None for v in value]
            except TypeError:
                values = None
            if values is not None and len(values) == len(job.prompts) and None not in values:
                return MetricResult(sum(values) / len(values), tuple(values))  # type: ignore[arg-type]  # no None
            if values is None and hasattr(value, "__float__"):  # a NumPy or torch scalar
                try:
                    return MetricResult(float(value))
                except (TypeError, ValueError):
                    pass
        raise TypeError(
            f"the custom metric's function must return a number or one number per prompt ({len(job.prompts)}), "
            f"got {_describe(value)}"
        )

    # -- helpers -------------------------------------------------------------

    def _prompt_ids(self, prompt: Any) -> list[int]:
        """A prompt's token ids: as the tokenizer makes them, or, with ``chat``, the chat template
        with the generation prompt (a plain string is one user message)."""
        tok = self.tokenizer
        if not self.chat:
            return list(tok(prompt)["input_ids"])
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def _pad_id(self) -> int | None:
        tok = self.tokenizer
        pad = getattr(tok, "pad_token_id", None)
        return pad if pad is not None else getattr(tok, "eos_token_id", None)

    def _batch_pad_id(self) -> int:
        """The id that pads batched prompts; an :class:`InvalidArgumentError` when there is none."""
        pad = self._pad_id()
        if pad is None:
            raise InvalidArgumentError(
                f"{type(self.tokenizer).__name__} has neither a pad token nor an EOS token, so prompts cannot be "
                "batched; set tokenizer.pad_token first"
            )
        return pad

    def _device(self):
        try:
            return next(self.model.parameters()).device
        except (StopIteration, AttributeError):
            import torch

            return torch.device("cpu")

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


# ----------------------------------------------------------------------------- internals


def _check_indexes(indexes: Any, n: int) -> tuple[int, ...]:
    """Increasing prompt positions in ``range(n)``, at least one."""
    items = check_list("indexes", indexes, "prompt positions")
    if not items or not all(is_int(i) and 0 <= i < n for i in items):
        raise InvalidArgumentError(f"indexes must be a non-empty list of positions in 0..{n - 1}, got {items!r}")
    if any(b <= a for a, b in itertools.pairwise(items)):
        raise InvalidArgumentError(f"indexes must be increasing positions, got {items!r}")
    return tuple(int(i) for i in items)


def _applied(steer, config):
    return steer.applied(config)


def _pad(rows: Sequence[Sequence[int]], pad_id: int, side: str):
    """``input_ids`` and ``attention_mask`` for token-id rows, padded on ``side``."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if not len(r):
            raise InvalidArgumentError(f"prompt {i} has no tokens")
        if side == "left":
            ids[i, width - len(r) :] = torch.tensor(list(r), dtype=torch.long)
            mask[i, width - len(r) :] = 1
        else:
            ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
            mask[i, : len(r)] = 1
    return ids, mask


def _row_nll(logits, targets, keep) -> list[tuple[float, int]]:
    """Per row of ``keep`` ([rows, positions] bool: the positions whose logit predicts a scored
    token), ``(sum of the scored tokens' NLL, tokens scored)``: ``logits`` [N, V] are those
    positions' logits (row-major) and ``targets`` [N] the tokens they predict.  The NLL is a fused
    cross-entropy; non-finite logits raise :class:`NonFiniteOutputError`."""
    import torch

    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteOutputError("the model produced non-finite logits (NaN or inf) while scoring")
    nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none").double().cpu()
    owner = keep.nonzero()[:, 0].cpu()  # the row of each kept position, in the same order
    sums = torch.zeros(keep.shape[0], dtype=torch.float64).index_add_(0, owner, nll)
    counts = keep.sum(dim=1).cpu()
    return [(float(sums[r]), int(counts[r])) for r in range(keep.shape[0])]


def _same_nll(a: Sequence[tuple[float, int]], b: Sequence[tuple[float, int]], dtype) -> bool:
    """Do two scorings of the same rows agree up to rounding (per-token mean NLL within
    1e-3 nat, 5e-2 in half precision)?"""
    import torch

    tol = 5e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-3
    return all(na == nb and abs(sa - sb) <= tol * max(1, na) for (sa, na), (sb, nb) in zip(a, b))


def _greedy_overrides(model) -> dict[str, Any]:
    """generate() kwargs that keep greedy decoding silent when the model's generation config
    asks for sampling (temperature, top_p, top_k would each warn under do_sample=False)."""
    config = getattr(model, "generation_config", None)
    out: dict[str, Any] = {}
    for name, neutral in (("temperature", 1.0), ("top_p", 1.0), ("top_k", 50), ("min_p", None)):
        value = getattr(config, name, None)
        if value is not None and value != neutral:
            out[name] = None
    return out


def _processors(items):
    from transformers import LogitsProcessorList

    return LogitsProcessorList(items)


def _stopping(items):
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList(items)


class _FiniteCheck:
    """A logits processor that notes (on the device, no sync per step) whether any score was
    not finite; checked once after generate()."""

    def __init__(self) -> None:
        self.bad: Any = None  # a bool tensor once a step ran
        self.step = 0

    def __call__(self, input_ids, scores):
        import torch

        flag = ~torch.isfinite(scores).all()
        self.bad = flag if self.bad is None else self.bad | flag
        self.step += 1
        return scores

    def raise_if_bad(self, what: str) -> None:
        if self.bad is not None and bool(self.bad):
            raise NonFiniteOutputError(
                f"the model produced non-finite logits (NaN or inf) during {what}: the steering is far too "
                "strong for the model's dtype"
            )


class _StopWhenFound:
    """Per-row stopping: a row is done once its wanted (normalised) string appears in its
    continuation.  Rows without a wanted string only stop at EOS."""

    def __init__(self, tokenizer, start: int, wanted: Sequence[str | None]) -> None:
        self.tokenizer = tokenizer
        self.start = start
        self.wanted = list(wanted)
        self.done: Any = None  # a bool tensor, one flag per row, from the first step

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        todo = [b for b in range(input_ids.shape[0]) if self.wanted[b] and not bool(self.done[b])]
        if todo:
            texts = self.tokenizer.batch_decode(input_ids[todo, self.start :], skip_special_tokens=True)
            for b, text in zip(todo, texts):
                if self.wanted[b] in normalize_answer(text):  # type: ignore[operator]  # todo: wanted[b] set
                    self.done[b] = True
        return self.done.clone()
