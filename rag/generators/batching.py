"""Continuous batching for a local causal LM: concurrent requests decoded together, one token per step.

One scheduler thread owns the model. Between two decode steps it admits waiting requests: each is prefilled on
its own (its prompt in one forward pass, no padding, so its first token is exactly what decoding it alone gives)
and its KV cache is merged into the running batch, left-padded to the batch's width; finished, cancelled and
expired rows leave the batch at the same boundary. A step feeds every row's last token with its own position and
padding mask, so a row's greedy tokens do not depend on which other rows share its batch (up to the float
rounding of a different batch shape). No collection window: a request waits at most one decode step (plus the
prefills admitted before it) for its prefill.

Caps: `max_batch` rows decode together; `max_tokens_in_flight` bounds the sum over the rows of prompt +
max_new_tokens (what their KV caches may grow to; 0 = no cap); a request larger than that alone still runs,
alone. Requests wait in arrival order.

Each request is a `Decoding`: its consumer reads token ids from `tokens()` as they are made. It ends at a stop
token, at `max_new_tokens`, when cancelled (`cancel()`, or the consumer closing the `tokens()` iterator, as a
stream whose reader went away does) or at its deadline (the generation policy's clock, rag.generators.slots):
the row leaves the batch at the next step boundary and its place goes to the next request.

Works with transformers' `DynamicCache` (a `layers` list of key/value tensors, transformers >= 4.56), on CPU
(batch 1 by default: one forward already uses every core) and CUDA alike.
"""

from __future__ import annotations

import collections
import inspect
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator

from rag.generators.slots import GeneratorError, GeneratorTimeout

log = logging.getLogger(__name__)

_END = object()


class Decoding:
    """One request in the scheduler: a prompt's token ids in, generated token ids out (stop tokens excluded)."""

    def __init__(self, prompt_ids: list[int], *, max_new_tokens: int, temperature: float, deadline: float | None,
                 timeout_s: float | None, stop_ids: frozenset[int]):
        if not prompt_ids:
            raise ValueError("a prompt needs at least one token")
        self.prompt_ids = list(prompt_ids)
        self.max_new_tokens = max(1, int(max_new_tokens))
        self.temperature = float(temperature)
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.stop_ids = stop_ids
        self.submitted = time.monotonic()
        self.generated = 0  # tokens made so far (the scheduler thread counts)
        self.outcome = "waiting"  # waiting, running, done, cancelled, expired, failed
        self._cancelled = threading.Event()
        self._out: queue.SimpleQueue = queue.SimpleQueue()

    @property
    def budget(self) -> int:
        """Tokens this request's KV cache may grow to."""
        return len(self.prompt_ids) + self.max_new_tokens

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop this request; its row leaves the batch at the next step boundary. Harmless once it has ended."""
        self._cancelled.set()

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def tokens(self) -> Iterator[int]:
        """The generated token ids as they come. GeneratorTimeout at the deadline, GeneratorError on a failure;
        leaving the loop early (break, close, an exception in the consumer) cancels the request."""
        try:
            while True:
                wait = None if self.deadline is None else self.deadline - time.monotonic()
                try:
                    if wait is not None and wait <= 0:
                        raise queue.Empty
                    item = self._out.get(timeout=wait)
                except queue.Empty:
                    raise GeneratorTimeout(self.timeout_s) from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel()

    def result(self) -> list[int]:
        return list(self.tokens())

    # -- the scheduler's side ------------------------------------------------------------------------------
    def _accept(self, token: int) -> bool:
        """Record a generated token; True when the request is complete."""
        if token in self.stop_ids:
            return True
        self.generated += 1
        self._out.put(token)
        return self.generated >= self.max_new_tokens

    def _end(self, outcome: str, error: BaseException | None = None) -> None:
        self.outcome = outcome
        self._out.put(error if error is not None else _END)


class _Batch:
    """The rows decoding together: their KV cache (left-padded to one width), padding mask, next positions and the
    last token of each (made, not yet fed)."""

    def __init__(self, row: Decoding, cache, width: int, token, device):
        import torch

        self.rows = [row]
        self.cache = cache
        self.mask = torch.ones((1, width), dtype=torch.long, device=device)
        self.pos = torch.tensor([width], dtype=torch.long, device=device)
        self.last = token.reshape(1)

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def merge(self, other: _Batch) -> None:
        import torch

        width = max(self.width, other.width)
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width), _left_pad(other.mask, width)])
        self.pos = torch.cat([self.pos, other.pos])
        self.last = torch.cat([self.last, other.last])
        self.rows.extend(other.rows)

    def keep(self, indices: list[int]) -> None:
        """Keep only these rows; drop leading columns that are padding in every row left."""
        import torch

        idx = torch.tensor(indices, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, idx)
        start = int(self.mask.any(dim=0).int().argmax())  # the first column some row still uses
        self.mask = self.mask[:, start:]
        for layer in _layers(self.cache):
            layer.keys = layer.keys.index_select(0, idx)[:, :, start:]
            layer.values = layer.values.index_select(0, idx)[:, :, start:]
        self.pos = self.pos.index_select(0, idx)
        self.last = self.last.index_select(0, idx)
        self.rows = [self.rows[i] for i in indices]


def _why_gone(d: Decoding, now: float) -> str:
    # Past its deadline it expired, even when its consumer, timing out first, has cancelled it already.
    return "expired" if d.expired(now) else "cancelled"


def _layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise GeneratorError("this transformers version's KV cache has no `layers` (needs transformers >= 4.56)")
    if any(getattr(layer, "is_sliding", False) for layer in layers):
        # A sliding-window layer keeps only its last window of columns: left padding would shift rows out of it.
        raise GeneratorError("the batch scheduler needs full-attention KV caches; this model has sliding windows")
    return layers


def _left_pad(t, width: int):
    """Pad the sequence axis (dim 2 of a (batch, heads, seq, dim) cache tensor, dim 1 of a mask) on the left."""
    import torch

    axis = 2 if t.dim() == 4 else 1
    missing = width - t.shape[axis]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[axis] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=axis)


class BatchScheduler:
    """Decodes the requests submitted to it together, in one thread that owns `model` (see the module note)."""

    def __init__(self, model, *, max_batch: int, max_tokens_in_flight: int = 0, stop_ids: Iterable[int] = (),
                 name: str = "generate-batch"):
        self.model = model
        self.max_batch = max(1, int(max_batch))
        self.max_tokens_in_flight = max(0, int(max_tokens_in_flight))
        self.stop_ids = frozenset(int(t) for t in stop_ids)
        self.name = name
        # transformers renamed the forward's `past_key_values` to `cache` (5.2x); either works here.
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._waiting: collections.deque[Decoding] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._batch: _Batch | None = None
        # Counters, read by tests and the benchmark: steps, tokens, the widest batch, how requests ended.
        self.stats = {"steps": 0, "step_rows": 0, "prefills": 0, "tokens": 0, "max_rows": 0, "done": 0,
                      "cancelled": 0, "expired": 0, "failed": 0}

    # -- callers ------------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], *, max_new_tokens: int, temperature: float = 0.0,
               deadline: float | None = None, timeout_s: float | None = None,
               stop_ids: Iterable[int] | None = None) -> Decoding:
        return self.submit_many([prompt_ids], max_new_tokens=max_new_tokens, temperature=temperature,
                                deadline=deadline, timeout_s=timeout_s, stop_ids=stop_ids)[0]

    def submit_many(self, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
                    deadline: float | None = None, timeout_s: float | None = None,
                    stop_ids: Iterable[int] | None = None) -> list[Decoding]:
        """Queue several requests at once: they are admitted together when the caps allow."""
        stops = self.stop_ids if stop_ids is None else frozenset(int(t) for t in stop_ids)
        decodings = [Decoding(p, max_new_tokens=max_new_tokens, temperature=temperature, deadline=deadline,
                              timeout_s=timeout_s, stop_ids=stops) for p in prompts]
        with self._cond:
            if self._closed:
                raise GeneratorError("the batch scheduler is closed")
            self._waiting.extend(decodings)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return decodings

    def close(self) -> None:
        """Stop the scheduler thread; waiting and running requests end with a GeneratorError."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def active(self) -> int:
        batch = self._batch
        return 0 if batch is None else len(batch.rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    # -- the scheduler thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                admitted = self._admit()
                if admitted is None:  # closed
                    break
                try:
                    for d in admitted:
                        self._prefill(d)
                    self._evict()
                    if self._batch is not None:
                        self._step()
                except Exception as e:  # never leave callers waiting on a dead thread
                    log.exception("batch scheduler step failed")
                    self._fail_batch(GeneratorError(f"generation failed: {e}"))
        closed = GeneratorError("the batch scheduler is closed")
        for d in [*(self._batch.rows if self._batch else []), *self._waiting]:
            d._end("failed", closed)
        self._batch = None
        self._waiting.clear()

    def _admit(self) -> list[Decoding] | None:
        """The waiting requests that fit now (blocking while there is nothing to do); None once closed."""
        with self._cond:
            while not self._closed and self._batch is None and not self._waiting:
                self._cond.wait()
            if self._closed:
                return None
            rows = [] if self._batch is None else self._batch.rows
            in_flight = sum(d.budget for d in rows)
            taken: list[Decoding] = []
            now = time.monotonic()
            while self._waiting and len(rows) + len(taken) < self.max_batch:
                head = self._waiting[0]
                if head.cancelled or head.expired(now):
                    self._waiting.popleft()
                    self._finish(head, _why_gone(head, now))
                    continue
                alone = not rows and not taken
                if self.max_tokens_in_flight and not alone and in_flight + head.budget > self.max_tokens_in_flight:
                    break
                taken.append(self._waiting.popleft())
                in_flight += head.budget
            return taken

    def _prefill(self, d: Decoding) -> None:
        import torch

        now = time.monotonic()
        if d.cancelled or d.expired(now):
            self._finish(d, _why_gone(d, now))
            return
        d.outcome = "running"
        try:
            device = self.model.device
            ids = torch.tensor([d.prompt_ids], dtype=torch.long, device=device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            token = self._pick(out.logits[:, -1], [d])
            cache = out[self._cache_arg]
            self.stats["prefills"] += 1
            self.stats["tokens"] += 1
            if d._accept(int(token[0])):
                self._finish(d, "done")
                return
            row = _Batch(d, cache, ids.shape[1], token, device)
            if self._batch is None:
                self._batch = row
            else:
                self._batch.merge(row)
            self.stats["max_rows"] = max(self.stats["max_rows"], len(self._batch.rows))
        except Exception as e:  # this request fails; the others carry on
            log.exception("prefill failed")
            self._finish(d, "failed", GeneratorError(f"generation failed: {e}"))

    def _evict(self) -> None:
        batch = self._batch
        if batch is None:
            return
        now = time.monotonic()
        gone = {i: _why_gone(d, now) for i, d in enumerate(batch.rows) if d.cancelled or d.expired(now)}
        if gone:
            for i, outcome in gone.items():
                self._finish(batch.rows[i], outcome)
            self._drop(gone)

    def _step(self) -> None:
        import torch

        batch = self._batch
        try:
            mask = torch.cat([batch.mask, torch.ones((len(batch.rows), 1), dtype=batch.mask.dtype,
                                                     device=batch.mask.device)], dim=1)
            out = self.model(input_ids=batch.last[:, None], attention_mask=mask, position_ids=batch.pos[:, None],
                             use_cache=True, logits_to_keep=1, **{self._cache_arg: batch.cache})
            tokens = self._pick(out.logits[:, -1], batch.rows)
            made = tokens.tolist()  # the step's one wait for the device
        except Exception as e:  # the batch's state is unknown now: every row fails
            log.exception("decode step failed")
            self._fail_batch(GeneratorError(f"generation failed: {e}"))
            return
        batch.cache = out[self._cache_arg]
        batch.mask = mask
        batch.pos = batch.pos + 1
        batch.last = tokens
        self.stats["steps"] += 1
        self.stats["step_rows"] += len(batch.rows)
        self.stats["tokens"] += len(made)
        done = {i: "done" for i, (d, t) in enumerate(zip(batch.rows, made)) if d._accept(t)}
        if done:
            for i in done:
                self._finish(batch.rows[i], "done")
            self._drop(done)

    def _drop(self, gone: dict[int, str]) -> None:
        batch = self._batch
        keep = [i for i in range(len(batch.rows)) if i not in gone]
        if not keep:
            self._batch = None
            return
        batch.keep(keep)

    def _pick(self, logits, rows: list[Decoding]):
        """Next token per row: argmax for greedy rows, a sample at the row's temperature otherwise."""
        import torch

        greedy = logits.argmax(dim=-1)
        if all(d.temperature <= 0 for d in rows):
            return greedy
        temps = torch.tensor([max(d.temperature, 1e-6) for d in rows], dtype=torch.float32, device=logits.device)
        probs = torch.softmax(logits.float() / temps[:, None], dim=-1)
        sampled = torch.multinomial(probs, 1).squeeze(1)
        sample = torch.tensor([d.temperature > 0 for d in rows], device=logits.device)
        return torch.where(sample, sampled, greedy)

    def _fail_batch(self, error: GeneratorError) -> None:
        batch, self._batch = self._batch, None
        for d in batch.rows if batch is not None else []:
            if d.outcome == "running":
                self._finish(d, "failed", error)

    def _finish(self, d: Decoding, outcome: str, error: BaseException | None = None) -> None:
        self.stats[outcome] += 1
        if outcome == "expired" and error is None:
            error = GeneratorTimeout(d.timeout_s)
        d._end(outcome, error)
