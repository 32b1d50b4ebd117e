"""`ClientStats`: the per-run counters that the model wrappers write and a run reads.

One object is handed to every wrapper of a chain (`wrap_model(..., stats=s)`), so a run reads its retries,
cache hits and spend from `s` instead of walking the chain's `.inner` links to find each wrapper.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ClientStats:
    """Counters of one run's model client (asyncio: updated on the event loop's thread only)."""

    retries: Counter[str] = field(default_factory=Counter)
    """Retries by cause: the HTTP status ("429", "500", ...) or the error kind ("timeout", "connection",
    "malformed")."""
    cache_hits: int = 0
    cache_misses: int = 0
    spent_usd: float = 0.0
    """What the model cost, including `spent_before_usd` (a resumed run counts against the same budget)."""
    spent_before_usd: float = 0.0

    @property
    def retries_total(self) -> int:
        return sum(self.retries.values())

    @property
    def new_usd(self) -> float:
        return self.spent_usd - self.spent_before_usd
