"""The server's batching engine: one thread owns the model and decodes every active request
in one batch, each batch row steered by its own configuration.

Continuous batching, AutoSteer's own scheduler: at every iteration the rows that finished
or whose client went away leave the batch (their KV-cache rows are dropped), waiting
requests join it (a prefill of the new rows alone, left-padded, whose KV cache is then
merged into the running one), and one decode forward advances every row by one token.
Each row is a group of ``Steer.applied([...])`` / ``Steer.rows(...)``: the per-row steering
the search's population mode uses, so a batch of K different configurations costs one
forward per token.  A schedule counts the steps of its own request (rows join at different
times), so a request decodes the same tokens alone or in any batch.

transformers' ``ContinuousBatchingManager`` packs requests into one flattened sequence
with paged attention and its own forward wrapper; a forward pre-hook there sees a packed
[1, total_tokens, D] tensor without batch rows, so the per-row steering (which works on
batch rows and their last real token) cannot ride it.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from autosteer.serve.steering import RequestError, RowSteering
from autosteer.steering.layers import cache_argument
from autosteer.steering.steer import Steer

__all__ = ["Engine", "Event", "Row"]

log = logging.getLogger("autosteer.serve")


@dataclass
class Event:
    """What the engine tells a request: new ``text`` (may be empty), and at the end
    ``finish_reason`` ("stop", "length", or "error" with ``error``)."""

    text: str = ""
    finish_reason: str | None = None
    error: Exception | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(eq=False)
class Row:
    """One request in the engine."""

    prompt_ids: list[int]
    max_tokens: int
    sink: Callable[[Event], None]
    steering: RowSteering = field(default_factory=RowSteering)
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # engine state
    generated: list[int] = field(default_factory=list)
    step: int = 0
    sent: int = 0  # characters of text already sent
    done: bool = False
    cancelled: bool = False
    eos: bool = False
    generator: torch.Generator | None = None
    slot: int | None = None  # the engine's batch slot: this row's group in Steer.rows

    def cancel(self) -> None:
        """The client went away: the row leaves the batch at the next iteration."""
        self.cancelled = True

    @property
    def batch_slot(self) -> int:
        """:attr:`slot`, once the engine has given the row one."""
        if self.slot is None:
            raise RuntimeError("this row has no batch slot yet")
        return self.slot


class Engine:
    """Owns the model in one thread; ``submit(row)`` queues a request.

    ``max_batch``: rows decoded together; ``max_waiting``: requests that may wait for a
    row (one more is refused with HTTP 429).
    """

    def __init__(self, model, tokenizer, *, max_batch: int = 8, max_waiting: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.steer = Steer(model, tokenizer)
        self.device = next(model.parameters()).device
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos]))
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        self._cond = threading.Condition()
        self._waiting: collections.deque[Row] = collections.deque()
        self._active: list[Row] = []
        self._cache: Any = None  # the running batch's transformers Cache, None without one
        self._mask: torch.Tensor | None = None  # [B, T] 1 = real token
        self._installed: dict[int, Row] = {}  # slot -> the row whose vectors are on the model
        self._closing = False
        self._finished: list[tuple[Row, Event]] = []  # sent once the iteration is over
        self._stopped = threading.Event()
        self.stats = {"forwards": 0, "tokens": 0, "max_rows": 0, "cancelled": 0, "joined_running": 0}
        import inspect

        params = inspect.signature(model.forward).parameters
        self._cache_kw = cache_argument(model)
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._thread = threading.Thread(target=self._run, name="autosteer-serve-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def submit(self, row: Row) -> None:
        with self._cond:
            if self._closing:
                raise RequestError("the server is shutting down", None, status=503, type="server_error")
            if len(self._waiting) >= self.max_waiting:
                raise RequestError(
                    f"too many requests are waiting ({len(self._waiting)}); retry later",
                    None,
                    status=429,
                    type="rate_limit_error",
                )
            self._waiting.append(row)
            self._cond.notify()

    @property
    def busy(self) -> int:
        """Requests decoding or waiting."""
        with self._cond:
            return sum(not r.done for r in list(self._active)) + sum(not r.cancelled for r in self._waiting)

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new requests, finish the ones in flight, stop the thread; True when drained."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        while not self._active and not self._waiting and not self._closing:
                            self._cond.wait()
                        if self._closing and not self._active and not self._waiting:
                            break
                        new: list[Row] = []
                        while self._waiting and len(self._active) + len(new) < self.max_batch:
                            row = self._waiting.popleft()
                            if row.cancelled:
                                continue
                            new.append(row)
                    try:
                        self._iterate(new)
                        if not self._active:
                            self._set_steering([])  # idle: the model computes unsteered
                        self._flush()
                    except Exception as exc:
                        log.exception("batch failed")
                        for row in self._active + new:
                            if not row.done:
                                self._finish(row, "error", exc)
                        self._active = []
                        self._cache = self._mask = None
                        try:
                            self._set_steering([])
                        finally:
                            self._flush()
        finally:
            self._set_steering([])
            self._stopped.set()

    def _iterate(self, new: list[Row]) -> None:
        # 1. rows whose client left
        gone = [r for r in self._active if r.cancelled]
        self.stats["cancelled"] += len(gone)
        if gone:
            self._drop(gone)
        if not self._active and not new:
            return
        # 2. steering for every row of this iteration (a bad configuration fails its request only)
        self._set_steering(self._active + new)
        new = [r for r in new if not r.done]
        # 3. prefill the new rows and merge them into the batch
        if new:
            self._prefill(new)
        if not self._active:
            return
        # 4. one decode step for every row
        self._decode()

    def _set_steering(self, rows: list[Row]) -> None:
        """Install the steering of ``rows`` (the batch of this iteration).

        Each row owns a slot (0..max_batch-1), its group in ``Steer.rows``; a row's vectors are
        added once, with ``group=slot``, when it joins, and taken off when its slot is reused
        or the engine goes idle, so an iteration costs ``Steer.add`` calls only for the rows
        that join.  The group count stays ``max_batch`` so layers whose vectors did not change
        keep their hooks.  A configuration that fails fails its request only, and leaves
        nothing behind.
        """
        steer = self.steer
        if not rows:
            if self._installed:
                steer.remove_groups(list(self._installed))
                steer.declare_groups(0)
                self._installed = {}
            return
        used = {r.slot for r in rows if r.slot is not None}
        free = [slot for slot in range(self.max_batch - 1, -1, -1) if slot not in used]
        for r in rows:
            if r.slot is None:
                r.slot = free.pop()
        live = {r.batch_slot: r for r in rows}
        joining = [r for r in rows if r.steering and self._installed.get(r.batch_slot) is not r]
        stale = [slot for slot, owner in self._installed.items() if live.get(slot) is not owner]
        if stale or (joining and any(self._installed.get(r.batch_slot) is not None for r in joining)):
            drop = set(stale) | {r.batch_slot for r in joining}
            steer.remove_groups(sorted(drop))
            for slot in drop:
                self._installed.pop(slot, None)
        if not joining:
            return
        steer.declare_groups(self.max_batch)
        for r in joining:
            r.steering.row = r
            try:
                r.steering.apply(steer, group=r.slot)
            except Exception as exc:
                steer.remove_groups([r.slot])  # its slot held nothing before (dropped above)
                self._finish(r, "error", RequestError(f"steering: {exc}", "steering"))
                if r in self._active:
                    self._drop([r], finish=False)
                continue
            self._installed[r.batch_slot] = r

    def _forward(self, rows, **kwargs) -> tuple[Any, Any]:
        self.stats["forwards"] += 1
        self.stats["max_rows"] = max(self.stats["max_rows"], len(rows))
        with self.steer.rows(torch.tensor([r.slot for r in rows], dtype=torch.long)):
            cache = kwargs.pop("cache")
            out = self.model(use_cache=True, **{self._cache_kw: cache}, **self._keep, **kwargs)
        new_cache = getattr(out, "cache", None)
        return out, (new_cache if new_cache is not None else out.past_key_values)

    def _prefill(self, new: list[Row]) -> None:
        width = max(len(r.prompt_ids) for r in new)
        ids = torch.full((len(new), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for b, r in enumerate(new):
            n = len(r.prompt_ids)
            ids[b, width - n :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[b, width - n :] = 1
            r.step = 0
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        out, cache = self._forward(
            new,
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos.to(self.device),
            cache=cache,
        )
        tokens = self._sample(new, out.logits[:, -1, :])
        keep = [b for b, r in enumerate(new) if not self._advance(r, tokens[b])]
        if not keep:
            return
        if len(keep) < len(new):
            idx = torch.tensor(keep, dtype=torch.long, device=self.device)
            for layer in cache.layers:
                layer.batch_select_indices(idx)
            mask = mask[keep]
        kept = [new[b] for b in keep]
        if self._cache is None:
            self._cache, self._mask, self._active = cache, mask, kept
        else:
            self.stats["joined_running"] += len(kept)  # continuous batching: joined rows mid-decode
            self._merge(cache, mask)
            self._active = self._active + kept
        self._trim()

    def _batch_mask(self) -> torch.Tensor:
        """The running batch's attention mask (there is one while rows are active)."""
        if self._mask is None:
            raise RuntimeError("the engine has no running batch")
        return self._mask

    def _merge(self, cache, mask: torch.Tensor) -> None:
        t_old, t_new = self._batch_mask().shape[1], mask.shape[1]
        width = max(t_old, t_new)

        def left(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
            if pad == 0:
                return x
            shape = list(x.shape)
            shape[dim] = pad
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([left(mine.keys, width - t_old, -2), left(theirs.keys, width - t_new, -2)])
            mine.values = torch.cat([left(mine.values, width - t_old, -2), left(theirs.values, width - t_new, -2)])
        self._mask = torch.cat([left(self._batch_mask(), width - t_old, 1), left(mask, width - t_new, 1)])

    def _decode(self) -> None:
        rows = self._active
        for r in rows:
            r.step = len(r.generated)
        last = torch.tensor([[r.generated[-1]] for r in rows], dtype=torch.long)
        pos = self._batch_mask().sum(-1, keepdim=True)
        mask = torch.cat([self._batch_mask(), torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
        out, self._cache = self._forward(
            rows,
            input_ids=last.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos.to(self.device),
            cache=self._cache,
        )
        self._mask = mask
        tokens = self._sample(rows, out.logits[:, -1, :])
        finished = [r for b, r in enumerate(rows) if self._advance(r, tokens[b])]
        if finished:
            self._drop(finished, finish=False)

    def _drop(self, rows: list[Row], finish: bool = True) -> None:
        """Take rows out of the batch (their KV-cache rows too)."""
        leaving = {id(r) for r in rows}
        keep = [b for b, r in enumerate(self._active) if id(r) not in leaving]
        if finish:
            for r in rows:
                r.done = True
        if not keep:
            self._active, self._cache, self._mask = [], None, None
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        for layer in self._cache.layers:
            layer.batch_select_indices(idx)
        self._mask = self._batch_mask()[keep]
        self._active = [self._active[b] for b in keep]
        self._trim()

    def _trim(self) -> None:
        """Drop leading cache columns that are padding in every row."""
        used = self._batch_mask().any(0).nonzero()
        start = int(used[0]) if used.numel() else 0
        if start > 0:
            for layer in self._cache.layers:
                layer.keys = layer.keys[..., start:, :]
                layer.values = layer.values[..., start:, :]
            self._mask = self._batch_mask()[:, start:]

    # ------------------------------------------------------------------ tokens
    def _sample(self, rows: list[Row], logits: torch.Tensor) -> list[int]:
        logits = logits.float()
        out = logits.argmax(-1).tolist()
        for b, r in enumerate(rows):
            if r.temperature <= 0:
                continue
            probs = torch.softmax(logits[b] / r.temperature, dim=-1)
            if r.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                cum = sorted_p.cumsum(-1)
                cut = cum - sorted_p > r.top_p  # keep the smallest prefix whose mass reaches top_p
                sorted_p[cut] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
            if r.generator is None:
                r.generator = torch.Generator()
                if r.seed is not None:
                    r.generator.manual_seed(r.seed)
                else:
                    r.generator.seed()
            out[b] = int(torch.multinomial(probs.cpu(), 1, generator=r.generator))
        self.stats["tokens"] += len(rows)
        return out

    def _advance(self, row: Row, token: int) -> bool:
        """Take one new token of ``row``; send its text; True when the row is finished."""
        if row.cancelled:
            self.stats["cancelled"] += 1
            self._finish(row, "cancelled")
            return True
        if token in self.eos_ids:
            row.eos = True  # generated, so counted in the usage as OpenAI and transformers serve count it
            self._emit(row, final=True)
            self._finish(row, "stop")
            return True
        row.generated.append(token)
        text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        if row.stop:
            hits = [text.find(s, max(0, row.sent - len(s))) for s in row.stop]
            hits = [h for h in hits if h >= 0]
            if hits:
                self._emit(row, text[: min(hits)], final=True)
                self._finish(row, "stop")
                return True
        if len(row.generated) >= row.max_tokens:
            self._emit(row, text, final=True)
            self._finish(row, "length")
            return True
        self._emit(row, text)
        return False

    def _emit(self, row: Row, text: str | None = None, final: bool = False) -> None:
        if text is None:
            text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        end = len(text)
        if not final:
            if text.endswith("\ufffd"):  # half of a multi-byte character
                end = len(text.rstrip("\ufffd"))
            for s in row.stop:  # hold back a possible start of a stop string
                for k in range(min(len(s) - 1, end), 0, -1):
                    if text[:end].endswith(s[:k]):
                        end = min(end, len(text[:end]) - k)
                        break
        if end > row.sent:
            piece = text[row.sent : end]
            row.sent = end
            row.sink(Event(text=piece))

    def _finish(self, row: Row, reason: str, error: Exception | None = None) -> None:
        if row.done:
            return
        row.done = True
        # told after the iteration: by then an idle engine has taken its steering off the model
        self._finished.append(
            (
                row,
                Event(
                    finish_reason=reason,
                    error=error,
                    prompt_tokens=len(row.prompt_ids),
                    completion_tokens=len(row.generated) + row.eos,
                ),
            )
        )

    def _flush(self) -> None:
        finished, self._finished = self._finished, []
        for row, event in finished:
            row.sink(event)
