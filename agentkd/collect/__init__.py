"""Teacher trajectory collection: concurrency, resume, budget, progress (`agentkd collect`)."""

from agentkd.collect.config import CollectConfig
from agentkd.collect.runner import collect

__all__ = ["CollectConfig", "collect"]
