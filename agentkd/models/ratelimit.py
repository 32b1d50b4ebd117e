"""`RateLimitedModel`: bounded request concurrency plus requests/tokens-per-minute limits."""

from __future__ import annotations

import asyncio

from agentkd.models.base import ChatModel, WrappedModel


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
            return await self.inner.generate(messages, **kw)
