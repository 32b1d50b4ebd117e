"""How a run talks to its model: `ClientConfig` and `wrap_model`, which composes
cache ∘ budget ∘ retry ∘ rate limit around a provider.

    model = CachedModel(BudgetedModel(RetryingModel(RateLimitedModel(provider, rpm=500)), budget_usd=5), cache)

Each wrapper (`agentkd.models.{cache,budget,retry,ratelimit}`) is a `ChatModel` holding the next one and
calling its public `generate`. The wrappers of one chain share one `ClientStats` (retries, cache hits,
spend), which the run reads for its progress bar and summary.
"""

from __future__ import annotations

from pydantic import Field

from agentkd.core.config import StrictConfig
from agentkd.models.base import ChatModel
from agentkd.models.budget import BudgetedModel, BudgetExceeded
from agentkd.models.cache import CachedModel, RequestCache
from agentkd.models.ratelimit import RateLimitedModel
from agentkd.models.retry import RetryingModel
from agentkd.models.stats import ClientStats

__all__ = ["BudgetExceeded", "BudgetedModel", "CachedModel", "ClientConfig", "ClientStats", "RateLimitedModel",
           "RequestCache", "RetryingModel", "wrap_model"]


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


def wrap_model(provider: ChatModel, cfg: ClientConfig, cache: RequestCache | None,
               stats: ClientStats | None = None) -> ChatModel:
    """cache ∘ budget ∘ retry ∘ rate limit ∘ provider, all counting into `stats` (what earlier runs spent,
    the cache's total, is where the budget starts)."""
    stats = stats if stats is not None else ClientStats()
    model: ChatModel = RateLimitedModel(provider, max_concurrency=cfg.max_concurrency, rpm=cfg.rpm, tpm=cfg.tpm)
    model = RetryingModel(model, retries=cfg.retries, backoff_s=cfg.backoff_s, max_backoff_s=cfg.max_backoff_s,
                          stats=stats)
    model = BudgetedModel(model, budget_usd=cfg.budget_usd, spent_usd=cache.total_cost() if cache else 0.0,
                          price_in_per_mtok=cfg.price_in_per_mtok, price_out_per_mtok=cfg.price_out_per_mtok,
                          stats=stats)
    if cache is not None and cfg.cache:
        model = CachedModel(model, cache, stats=stats)
    return model
