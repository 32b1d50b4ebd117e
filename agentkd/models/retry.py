"""`RetryingModel`: retries retryable `ModelError`s (429, 5xx, timeouts, bad responses) with backoff."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from agentkd.models.base import ChatModel, ModelError, WrappedModel


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
