"""`CachedModel` and its SQLite `RequestCache`: identical requests are replayed, not re-sent."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agentkd.core.hashing import canonical_json
from agentkd.models.base import ChatModel, Completion, WrappedModel


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

    def put(self, key: str, model: str, request: dict[str, Any] | str, comps: list[Completion]) -> None:
        """Store `comps` for `request` (a dict, or its JSON text when the caller already has it)."""
        text = request if isinstance(request, str) else json.dumps(request, ensure_ascii=False, default=str)
        self._conn().execute(
            "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?)",
            (key, model, text, json.dumps([c.model_dump(mode="json") for c in comps]),
             sum(c.cost_usd for c in comps), time.time()))

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

    def request_key(self, messages: list[dict[str, Any]], kw: dict[str, Any]) -> tuple[str, str]:
        """(content address, canonical JSON of the request: stored as is, not encoded a second time)."""
        text = canonical_json({"model": self.inner.describe(), "messages": messages, **kw})
        return hashlib.sha256(text.encode()).hexdigest()[:32], text

    async def _generate(self, messages, **kw):
        # get/put run on the event loop: a point lookup or one WAL insert (no fsync) costs tens of µs, far
        # less than a hop to a worker thread and back, which under 64 concurrent episodes also fights the
        # event loop for the GIL
        key, request = self.request_key(messages, kw)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats["hits"] += 1
            return [c.model_copy(update={"cached": True}) for c in hit]
        self.stats["misses"] += 1
        comps = await self.inner._generate(messages, **kw)
        self.cache.put(key, self.inner.name, request, comps)
        return comps
