"""Behaviour by wrapping: cache ∘ budget ∘ retry ∘ rate limit around a provider.

    model = CachedModel(BudgetedModel(RetryingModel(RateLimitedModel(provider, rpm=500)), budget_usd=5), cache)

Each wrapper is a `ChatModel` holding the next one; `wrap_model` composes them in that order from a
`ClientConfig`. Counters (`stats`) feed run summaries.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field

from agentkd.core.config import StrictConfig
from agentkd.core.hashing import stable_hash
from agentkd.models.base import ChatModel, Completion, ModelError, WrappedModel


class ClientConfig(StrictConfig):
    """How requests to a model are made: concurrency, rate limits, retries, prices, budget."""

    max_concurrency: int = Field(default=32, ge=1, description="Requests in flight at once.")
    rpm: float | None = Field(default=None, gt=0, description="Requests per minute limit (None: unlimited).")
    tpm: float | None = Field(default=None, gt=0, description="Tokens per minute limit (prompt estimate + max_tokens).")
    retries: int = Field(default=6, ge=0, description="Retries on 429/5xx/timeouts/connection errors/bad responses.")
    backoff_s: float = Field(default=1.0, gt=0, description="First retry delay; doubles each attempt (with jitter).")
    max_backoff_s: float = Field(default=60.0, gt=0, description="Longest delay between retries.")
    budget_usd: float | None = Field(default=None, ge=0, description="Hard stop: no new paid call once this is spent.")
    price_in_per_mtok: float | None = Field(default=None, ge=0, description="USD per 1M prompt tokens (overrides litellm's map).")
    price_out_per_mtok: float | None = Field(default=None, ge=0, description="USD per 1M completion tokens (overrides litellm's map).")
    cache: bool = Field(default=True, description="Cache every request/response in the run's cache.sqlite.")


# --------------------------------------------------------------------------- rate limit
class RateLimitedModel(WrappedModel):
    """Bounds concurrency and enforces requests/tokens per minute (aiolimiter leaky buckets)."""

    def __init__(self, inner: ChatModel, *, max_concurrency: int = 32, rpm: float | None = None,
                 tpm: float | None = None):
        super().__init__(inner)
        self._sem = asyncio.Semaphore(max_concurrency)
        from aiolimiter import AsyncLimiter

        self._rpm = AsyncLimiter(rpm, 60) if rpm else None
        self._tpm = AsyncLimiter(tpm, 60) if tpm else None
        self._tpm_cap = tpm

    async def _generate(self, messages, **kw):
        async with self._sem:
            if self._rpm:
                await self._rpm.acquire()
            if self._tpm:
                est = sum(len(str(m.get("content", ""))) for m in messages) // 4 + (kw.get("max_tokens") or 512)
                await self._tpm.acquire(min(est, self._tpm_cap))  # type: ignore[arg-type]
            return await self.inner._generate(messages, **kw)


# --------------------------------------------------------------------------- retry
class RetryingModel(WrappedModel):
    """Retries retryable `ModelError`s with exponential backoff and jitter, honouring Retry-After."""

    def __init__(self, inner: ChatModel, *, retries: int = 6, backoff_s: float = 1.0, max_backoff_s: float = 60.0):
        super().__init__(inner)
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.stats: Counter[str] = Counter()

    async def _generate(self, messages, **kw):
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        def wait(state: Any) -> float:
            exc = state.outcome.exception()
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (state.attempt_number - 1))
            delay *= 0.5 + random.random() / 2
            after = getattr(exc, "retry_after", None)
            return min(self.max_backoff_s, max(delay, after)) if after else delay

        def before_sleep(state: Any) -> None:
            exc = state.outcome.exception()
            self.stats["retries"] += 1
            self.stats[f"retry:{getattr(exc, 'status', None) or type(exc).__name__}"] += 1

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1), wait=wait, before_sleep=before_sleep, reraise=True,
            retry=retry_if_exception(lambda e: isinstance(e, ModelError) and e.retryable),
        ):
            with attempt:
                return await self.inner._generate(messages, **kw)
        raise AssertionError("unreachable")


# --------------------------------------------------------------------------- budget
class BudgetExceeded(ModelError):
    """The run's budget is spent: no new paid calls. Raise the budget and rerun to resume."""


class BudgetedModel(WrappedModel):
    """Prices each fresh call (recipe prices, else litellm's) and refuses new calls past `budget_usd`.

    `spent_usd` starts from what earlier runs spent (e.g. the request cache's total), so a resumed run
    keeps counting against the same budget.
    """

    def __init__(self, inner: ChatModel, *, budget_usd: float | None = None, spent_usd: float = 0.0,
                 price_in_per_mtok: float | None = None, price_out_per_mtok: float | None = None):
        super().__init__(inner)
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.price_in = price_in_per_mtok
        self.price_out = price_out_per_mtok
        self._lock = asyncio.Lock()

    def exhausted(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd

    async def _generate(self, messages, **kw):
        if self.exhausted():
            raise BudgetExceeded(f"budget of ${self.budget_usd:.6g} spent (${self.spent_usd:.6g})")
        comps = await self.inner._generate(messages, **kw)
        if self.price_in is not None or self.price_out is not None:
            usage = comps[0].usage if comps else None
            prompt = usage.prompt_tokens if usage else 0
            out_tokens = sum(c.usage.completion_tokens for c in comps)
            cost = (prompt * (self.price_in or 0) + out_tokens * (self.price_out or 0)) / 1e6
            for c in comps:
                c.cost_usd = cost / len(comps)
        async with self._lock:
            self.spent_usd += sum(c.cost_usd for c in comps)
        return comps


# --------------------------------------------------------------------------- cache
class RequestCache:
    """Content-addressed SQLite store of request → completions (and what the call cost)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS requests (key TEXT PRIMARY KEY, model TEXT, request TEXT, "
                      "response TEXT, cost_usd REAL, created REAL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> list[Completion] | None:
        row = self._conn().execute("SELECT response FROM requests WHERE key=?", (key,)).fetchone()
        return [Completion.model_validate(c) for c in json.loads(row[0])] if row else None

    def put(self, key: str, model: str, request: dict[str, Any], comps: list[Completion]) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?)",
            (key, model, json.dumps(request, ensure_ascii=False, default=str),
             json.dumps([c.model_dump(mode="json") for c in comps]), sum(c.cost_usd for c in comps), time.time()))

    def total_cost(self) -> float:
        return float(self._conn().execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests").fetchone()[0])

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM requests").fetchone()[0])


class CachedModel(WrappedModel):
    """Replays identical requests (model, messages, sampling params, seed, prefill) from a `RequestCache`."""

    def __init__(self, inner: ChatModel, cache: RequestCache):
        super().__init__(inner)
        self.cache = cache
        self.stats: Counter[str] = Counter()

    def request_key(self, messages: list[dict[str, Any]], kw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request = {"model": self.inner.describe(), "messages": messages, **kw}
        return stable_hash(request, length=32), request

    async def _generate(self, messages, **kw):
        key, request = self.request_key(messages, kw)
        hit = await asyncio.to_thread(self.cache.get, key)
        if hit is not None:
            self.stats["hits"] += 1
            return [c.model_copy(update={"cached": True}) for c in hit]
        self.stats["misses"] += 1
        comps = await self.inner._generate(messages, **kw)
        await asyncio.to_thread(self.cache.put, key, self.inner.name, request, comps)
        return comps


def wrap_model(provider: ChatModel, cfg: ClientConfig, cache: RequestCache | None) -> ChatModel:
    """cache ∘ budget ∘ retry ∘ rate limit ∘ provider."""
    model: ChatModel = RateLimitedModel(provider, max_concurrency=cfg.max_concurrency, rpm=cfg.rpm, tpm=cfg.tpm)
    model = RetryingModel(model, retries=cfg.retries, backoff_s=cfg.backoff_s, max_backoff_s=cfg.max_backoff_s)
    model = BudgetedModel(model, budget_usd=cfg.budget_usd, spent_usd=cache.total_cost() if cache else 0.0,
                          price_in_per_mtok=cfg.price_in_per_mtok, price_out_per_mtok=cfg.price_out_per_mtok)
    if cache is not None and cfg.cache:
        model = CachedModel(model, cache)
    return model


def find(model: ChatModel, kind: type) -> Any:
    """The first wrapper of `kind` in a wrapped chain (or None)."""
    while model is not None:
        if isinstance(model, kind):
            return model
        model = getattr(model, "inner", None)  # type: ignore[assignment]
    return None
