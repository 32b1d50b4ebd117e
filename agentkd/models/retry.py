"""`RetryingModel`: retries retryable `ModelError`s (429, 5xx, timeouts, bad responses) with backoff."""

from __future__ import annotations

import asyncio
import random

from agentkd.models.base import ChatModel, ModelError, WrappedModel
from agentkd.models.stats import ClientStats


class RetryingModel(WrappedModel):
    """Retries retryable `ModelError`s with exponential backoff and jitter, honouring Retry-After.

    At most `retries` retries after the first attempt; the last error is re-raised. Errors that are not
    retryable `ModelError`s (including `BudgetExceeded` and `FatalModelError`) propagate at once. A plain
    loop rather than tenacity's `AsyncRetrying`, whose per-call set-up (inspecting every callback) cost
    more CPU than the rest of this wrapper chain on a successful call.
    """

    def __init__(self, inner: ChatModel, *, retries: int = 6, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 stats: ClientStats | None = None):
        super().__init__(inner)
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.stats = stats if stats is not None else ClientStats()

    def delay(self, attempt: int, exc: ModelError) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2
        after = exc.retry_after
        return min(self.max_backoff_s, max(delay, after)) if after else delay

    async def _generate(self, messages, **kw):
        attempt = 1
        while True:
            try:
                return await self.inner.generate(messages, **kw)
            except ModelError as exc:
                if not exc.retryable or attempt > self.retries:
                    raise
                self.stats.retries[exc.kind] += 1
                await asyncio.sleep(self.delay(attempt, exc))
                attempt += 1
