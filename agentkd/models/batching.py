"""Static batching for local models: concurrent requests are decoded together as the rows of one batch.

Requests go into a thread-safe queue; one generation worker thread takes whatever is waiting (after a short
collection window counted from the oldest waiting request), expands each request into rows (n samples, or
one row for greedy requests, whose n answers are copies) and runs them as one batch. Requests that arrive
while a batch runs wait and form the next one (no continuous batching). A batch holds at most
`max_sequences` rows and `max_tokens` (rows x (longest prompt + longest max_tokens)); a request's rows may be
split over consecutive batches. Prompts are tokenized on the worker thread, so requests gathered on the
event loop reach the queue together. A prefix all rows share (the system prompt of concurrent episodes, the
n samples of one request) is prefilled once for the batch: on a CPU, prefill of long agent prompts costs far
more than decoding and gains nothing from batching otherwise. The forward passes (agentkd/models/decode.py)
keep that prefix once and attend to it from every row (agentkd/models/shared_prefix.py), and a row leaves
the batch as soon as it ends. Each batch runs on `threads` torch threads (default 1, CPU only; restored
after the batch). On the 2-vCPU VM shared with other jobs, torch's own count (2) made every op wait at an
OpenMP barrier for a descheduled thread: a 4-row, 40-token batch took 54-82 s on 2 threads and 9 s on 1, a
220-token prefill 2-7 s against 0.7-1.2 s. That is what made `agentkd serve` + `agentkd collect` at
concurrency 4 run past 7 minutes: batch-1 decoding (a gemv) runs on one thread anyway, so the serialised
model mostly escaped it.

Sampling settings are per row, so requests never need to match to share a batch: `sample` picks each row's
token itself -- argmax for a greedy row; for a sampled row, temperature, then top-p (the smallest set of
tokens whose mass reaches top_p), then one draw from the row's own `torch.Generator`. A row's generator is
seeded from the request's seed and the sample index (`row_seed`) and is drawn from exactly once per token of
that row, so a seeded request gets the same samples whatever else shares its batch, as long as the logits
are the same: padding and batch size can change float rounding in the matmuls, which in rare near-ties
flips a sampled (or greedy) token.

`advance` ends each row on its own: end-of-sequence token, one of the request's stop strings in the
*generated* text, or the request's max_tokens. When all rows of a request are done its completions are built
and handed back at once, while the rest of the batch keeps generating; the rows of a request whose caller
gave up (cancelled) leave the batch at the next step. Each token's log-probability under the model (the raw
logits, before temperature/top-p; text tokens only, 5 decimals) is kept in `Completion.logprobs` (SAG's
tie-break averages them).
"""

from __future__ import annotations

import atexit
import collections
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentkd.core.config import ConfigError
from agentkd.models.base import Completion, Usage, truncate_at_stop

log = logging.getLogger(__name__)

_MASK64 = (1 << 63) - 1
_TOP_K = 256  # candidates of the top-p prefilter (see sample)


def row_seed(seed: int, index: int) -> int:
    """Seed of sample `index` of a request with `seed` (distinct for seed + s and index < 1e6)."""
    return (seed * 1_000_003 + index) & _MASK64


@dataclass
class Request:
    """One `ChatModel.generate` call: its encoded prompt, settings and where its answer goes."""

    encode: Callable[[], list[int]]  # the prompt's token ids; called on the worker thread
    n: int
    temperature: float | None
    top_p: float | None
    max_tokens: int
    stop: list[str] | None
    seed: int | None
    deliver: Callable[[list[Completion] | None, BaseException | None], None]
    abandoned: Callable[[], bool] = lambda: False
    arrived: float = field(default_factory=time.monotonic)
    rows: list[Row] = field(default_factory=list)
    finished: bool = False
    ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        # a stop string of L characters spans at most L tokens (+1 for a partial byte-level token)
        self.stop_window = max(len(s) for s in self.stop) + 2 if self.stop else 0

    @property
    def greedy(self) -> bool:
        return not self.temperature or self.temperature <= 0


@dataclass
class Row:
    """One sequence of a batch: sample `index` of `req`."""

    req: Request
    index: int
    gen: Any = None  # torch.Generator on the CPU; None for greedy rows
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    end: str | None = None  # eos | stop | length once done


def _nucleus(sp: Any, si: Any, top_p: Any, u: Any) -> Any:
    """One token per row from probabilities `sp` sorted descending (token ids `si`): the smallest prefix whose
    mass reaches top_p, then the draw `u` in [0, 1) over that prefix's cumulative mass."""
    import torch

    before = sp.cumsum(-1) - sp
    sp = sp * (before < top_p)  # always keeps the top token
    cdf = sp.cumsum(-1)
    pos = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=cdf.shape[1] - 1)
    return si.gather(1, pos).squeeze(1)


def sample(rows: list[Row], scores: Any) -> Any:
    """Each row's next token from its logits `scores` [rows, vocab] (see the module docstring), with the
    token's log-probability under the raw logits appended to the row's `logprobs`."""
    import torch

    scores = scores.float()
    chosen = scores.argmax(-1)
    sampled = [i for i, r in enumerate(rows) if r.gen is not None]
    if sampled:
        idx = torch.tensor(sampled, device=scores.device)
        temps = torch.tensor([float(rows[i].req.temperature or 1.0) for i in sampled], device=scores.device)
        top_p = torch.tensor([rows[i].req.top_p if rows[i].req.top_p is not None else 1.0 for i in sampled],
                             device=scores.device)[:, None]
        probs = torch.softmax(scores[idx] / temps[:, None], dim=-1)
        u = torch.tensor([float(torch.rand((), generator=rows[i].gen)) for i in sampled], device=scores.device,
                         dtype=probs.dtype)
        # top-p over the k most likely tokens only for the rows whose top k reach their top_p: the kept set
        # is then the same as over the sorted vocabulary (the full 49k sort was ~8% of a batched SAG step);
        # the other rows sort all of it. Per row, so a row's sample does not depend on its batch.
        sp, si = probs.topk(min(_TOP_K, probs.shape[1]), dim=-1)
        full = (sp.sum(-1) < top_p[:, 0]).nonzero().squeeze(1)
        pick = _nucleus(sp, si, top_p, u)
        if len(full):
            fp, fi = probs[full].sort(dim=-1, descending=True)
            pick[full] = _nucleus(fp, fi, top_p[full], u[full])
        chosen[idx] = pick
    # log p(chosen) = logit - logsumexp(logits): no full log_softmax tensor
    logp = (scores.gather(1, chosen[:, None]).squeeze(1) - torch.logsumexp(scores, dim=-1)).tolist()
    for row, lp in zip(rows, logp, strict=True):
        row.logprobs.append(lp)
    return chosen


def _stopped(row: Row, tokenizer: Any) -> bool:
    req = row.req
    if not req.stop:
        return False
    tail = tokenizer.decode(row.tokens[-req.stop_window:], skip_special_tokens=True)
    return any(s in tail for s in req.stop)


def advance(row: Row, token: int, eos: set[int], tokenizer: Any) -> None:
    """Record a row's new token; end the row on EOS, a stop string in its generated text, or its max_tokens."""
    if token in eos:
        row.end = "eos"
        return
    row.tokens.append(token)
    if _stopped(row, tokenizer):
        row.end = "stop"
    elif len(row.tokens) >= row.req.max_tokens:
        row.end = "length"


def completions(req: Request, tokenizer: Any) -> list[Completion]:
    """The request's completions from its finished rows (greedy: one row, copied n times)."""
    out = []
    for row in sorted(req.rows, key=lambda r: r.index):
        text, stopped = truncate_at_stop(tokenizer.decode(row.tokens, skip_special_tokens=True), req.stop)
        finish = "stop" if (stopped or row.end in ("eos", "stop")) else "length"
        usage = Usage(prompt_tokens=len(req.ids), completion_tokens=len(row.tokens) + (row.end == "eos"))
        # the text tokens' log-probs (not the end-of-sequence token's), as SAG's tie-break reads them
        lps = [round(x, 5) for x in row.logprobs[: len(row.tokens)]] or None
        out.append(Completion(text=text, finish_reason=finish, usage=usage, logprobs=lps))
    if req.greedy and req.n > 1:
        out = [out[0].model_copy(deep=True) for _ in range(req.n)]
    return out


def _cache_kw() -> str:
    """transformers 5.x renamed `past_key_values` to `cache` (the old name warns until 6.0)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _common_prefix(prompts: list[list[int]]) -> int:
    first, n = prompts[0], min(len(p) for p in prompts)
    for i in range(n):
        t = first[i]
        if any(p[i] != t for p in prompts):
            return i
    return n


def _close_at_exit(ref: weakref.ref[BatchWorker]) -> None:
    worker = ref()
    if worker is not None:
        worker.close()


class BatchWorker:
    """The request queue and the one thread that runs batches on `model` (a transformers causal LM).
    `submit` may be called from any thread; `Request.deliver` is called on the worker thread."""

    def __init__(self, model: Any, tokenizer: Any, *, device: str, max_sequences: int, max_tokens: int,
                 window_s: float, min_shared: int = 16, idle_s: float = 30.0, threads: int = 1,
                 attention: str = "auto"):
        from agentkd.models.shared_prefix import supported

        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_sequences, self.max_tokens, self.window_s, self.idle_s = max_sequences, max_tokens, window_s, idle_s
        self._queue: queue.Queue[Request] = queue.Queue()
        self._rows: collections.deque[Row] = collections.deque()  # rows waiting for a batch (worker only)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches: list[int] = []  # rows of each batch run, for tests and benches
        self.shared: list[int] = []  # prefix tokens prefilled once for all rows, per batch
        self.spread_ms: list[float] = []  # first to last arrival of the requests in each batch
        self.min_shared = min_shared
        self.threads = threads
        able = attention != "plain" and supported(model)
        if attention == "shared_prefix" and not able:
            raise ConfigError(f"{type(model).__name__} does not support shared-prefix attention", path="batch.attention")
        self.cascade = able
        if str(device).startswith("cpu"):
            from agentkd.models.decode import use_skinny_linears

            use_skinny_linears(model)
        self.cache_kw = _cache_kw()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        self.eos = {tokenizer.eos_token_id, tokenizer.pad_token_id, *gen_eos} - {None}
        self._closing = False
        atexit.register(_close_at_exit, weakref.ref(self))

    def close(self, timeout_s: float = 60.0) -> None:
        """Let the worker thread finish what it holds and end (a request's answer is delivered from inside
        its batch's decoding, so without this the interpreter could exit while the thread is still in
        torch: "terminate called without an active exception", exit status 134)."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._queue.put(None)  # type: ignore[arg-type]
        thread.join(timeout_s)

    def submit(self, req: Request) -> None:
        with self._lock:
            self._queue.put(req)
            if self._thread is None:
                # the thread ends after idle_s without work (so an unused model can be freed) and is started again
                self._thread = threading.Thread(target=self._run, name="agentkd-local-generate", daemon=True)
                self._thread.start()

    # ---- worker thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            while not self._rows:
                if self._closing:
                    with self._lock:
                        self._closing = False
                        if self._queue.empty():  # else a request came after close: serve it
                            self._thread = None
                            return
                try:
                    self._take(self._queue.get(timeout=self.idle_s))
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._thread = None
                            return
            try:
                self._collect()
                rows = self._next_batch()
                if rows:
                    self._run_batch(rows)
            except Exception as e:  # a bug here must not leave callers waiting forever
                log.exception("local generation worker failed")
                while self._rows:
                    self._fail(self._rows.popleft().req, e)

    def _take(self, req: Request | None) -> None:
        """Tokenize a request and expand it into rows (the worker's pending list); None: `close`."""
        import torch

        if req is None:
            self._closing = True
            return
        try:
            req.ids = list(req.encode())
        except Exception as e:
            self._fail(req, e)
            return
        rows = []
        for i in range(1 if req.greedy else req.n):
            gen = None
            if not req.greedy:
                seed = row_seed(req.seed, i) if req.seed is not None else int(torch.randint(0, 2**62, ()).item())
                gen = torch.Generator().manual_seed(seed)
            rows.append(Row(req, i, gen))
        req.rows = rows
        self._rows.extend(rows)

    def _collect(self) -> None:
        """Take what is waiting; wait until the oldest waiting request is window_s old or the batch is full."""
        if not self._rows:
            return
        deadline = self._rows[0].req.arrived + self.window_s
        while len(self._rows) < self.max_sequences:
            left = deadline - time.monotonic()
            try:
                req = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            self._take(req)

    def _next_batch(self) -> list[Row]:
        """Rows from the front of the waiting list, up to max_sequences rows and max_tokens padded tokens
        (at least one row, however long)."""
        rows: list[Row] = []
        prompt = new = 0
        while self._rows:
            req = self._rows[0].req
            if req.finished or req.abandoned():
                self._rows.popleft()
                continue
            size = (len(rows) + 1) * (max(prompt, len(req.ids)) + max(new, req.max_tokens))
            if rows and (len(rows) >= self.max_sequences or size > self.max_tokens):
                break
            prompt, new = max(prompt, len(req.ids)), max(new, req.max_tokens)
            rows.append(self._rows.popleft())
        return rows

    def _finish(self, req: Request) -> None:
        if req.finished or any(r.end is None for r in req.rows):
            return
        req.finished = True
        try:
            comps = completions(req, self.tokenizer)
        except Exception as e:
            req.deliver(None, e)
            return
        req.deliver(comps, None)

    def _fail(self, req: Request, error: BaseException) -> None:
        if not req.finished:
            req.finished = True
            req.deliver(None, error)

    def _threads(self) -> int | None:
        """Threads for a batch, when they differ from torch's current setting (CPU only)."""
        import torch

        if not self.threads or not str(self.device).startswith("cpu"):
            return None
        return self.threads if self.threads != torch.get_num_threads() else None

    def _shared(self, prompts: list[list[int]]) -> int:
        """Prompt tokens prefilled once for the whole batch: the prefix all rows share when it is at least
        `min_shared` tokens (0: never), or all of a lone row's prompt but its last token; every row keeps at
        least one token of its own, whose logits start its reply."""
        if len(prompts) == 1:
            return len(prompts[0]) - 1 if self.cascade else 0
        shared = min(_common_prefix(prompts), min(len(p) for p in prompts) - 1)
        return shared if self.min_shared and shared >= self.min_shared else 0

    def _decode(self, rows: list[Row]) -> None:
        """Prefill the batch, then one token per live row per step; a row leaves the batch when it ends (its
        request is answered once all its rows have) or when its caller gave up."""
        import torch

        from agentkd.models.decode import PlainBatch, SharedPrefixBatch

        prompts = [r.req.ids for r in rows]
        shared = self._shared(prompts)
        self.shared.append(shared)
        kind = SharedPrefixBatch if self.cascade else PlainBatch
        batch = kind(self.model, prompts, shared, max(r.req.max_tokens for r in rows), device=self.device,
                     pad_id=self.tokenizer.pad_token_id, cache_kw=self.cache_kw)
        logits, live = batch.prefill(), rows
        while True:
            tokens = sample(live, logits).tolist()
            for row, token in zip(live, tokens, strict=True):
                advance(row, token, self.eos, self.tokenizer)
                if row.end is not None:
                    self._finish(row.req)
                elif row.req.abandoned():
                    row.end, row.req.finished = "abandoned", True
            keep = [i for i, r in enumerate(live) if r.end is None]
            if not keep:
                return
            if len(keep) < len(live):
                index = torch.tensor(keep, device=self.device)
                batch.select(index)
                live, tokens = [live[i] for i in keep], [tokens[i] for i in keep]
            logits = batch.step(torch.tensor(tokens, device=self.device))

    def _run_batch(self, rows: list[Row]) -> None:
        import torch

        self.batches.append(len(rows))
        arrived = [r.req.arrived for r in rows]
        self.spread_ms.append((max(arrived) - min(arrived)) * 1000)
        try:
            with torch.inference_mode():
                before, threads = torch.get_num_threads(), self._threads()
                if threads:
                    torch.set_num_threads(threads)
                try:
                    self._decode(rows)
                finally:
                    if threads:
                        torch.set_num_threads(before)
        except Exception as e:
            log.warning("local generate failed for a batch of %d rows: %s", len(rows), e)
            for r in rows:
                self._fail(r.req, e)
            return
