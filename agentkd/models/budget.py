"""`BudgetedModel`: prices each fresh call and refuses new calls once the budget is spent."""

from __future__ import annotations

import asyncio

from agentkd.models.base import ChatModel, ModelError, WrappedModel
from agentkd.models.stats import ClientStats


class BudgetExceeded(ModelError):
    """The run's budget is spent: no new paid calls. Raise the budget and rerun to resume."""


class BudgetedModel(WrappedModel):
    """Prices each fresh call (recipe prices, else litellm's) and refuses new calls past `budget_usd`.

    `spent_usd` starts from what earlier runs spent (e.g. the request cache's total), so a resumed run
    keeps counting against the same budget. The spend is kept on `stats` (shared with the run).
    """

    def __init__(self, inner: ChatModel, *, budget_usd: float | None = None, spent_usd: float = 0.0,
                 price_in_per_mtok: float | None = None, price_out_per_mtok: float | None = None,
                 stats: ClientStats | None = None):
        super().__init__(inner)
        self.budget_usd = budget_usd
        self.stats = stats if stats is not None else ClientStats()
        if spent_usd:
            self.stats.spent_usd = self.stats.spent_before_usd = spent_usd
        self.price_in = price_in_per_mtok
        self.price_out = price_out_per_mtok
        self._lock = asyncio.Lock()

    @property
    def spent_usd(self) -> float:
        return self.stats.spent_usd

    def exhausted(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd

    async def _generate(self, messages, **kw):
        if self.exhausted():
            raise BudgetExceeded(f"budget of ${self.budget_usd:.6g} spent (${self.spent_usd:.6g})")
        comps = await self.inner.generate(messages, **kw)
        if self.price_in is not None or self.price_out is not None:
            usage = comps[0].usage if comps else None
            prompt = usage.prompt_tokens if usage else 0
            out_tokens = sum(c.usage.completion_tokens for c in comps)
            cost = (prompt * (self.price_in or 0) + out_tokens * (self.price_out or 0)) / 1e6
            for c in comps:
                c.cost_usd = cost / len(comps)
        async with self._lock:
            self.stats.spent_usd += sum(c.cost_usd for c in comps)
        return comps
