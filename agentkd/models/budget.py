"""`BudgetedModel`: prices each fresh call and refuses new calls once the budget is spent."""

from __future__ import annotations

import asyncio

from agentkd.models.base import ChatModel, ModelError, WrappedModel


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
