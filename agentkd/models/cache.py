"""`CachedModel` and its SQLite `RequestCache`: identical requests are replayed, not re-sent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from agentkd.core.hashing import canonical_json
from agentkd.models.base import ChatModel, Completion, WrappedModel
from agentkd.models.stats import ClientStats

log = logging.getLogger(__name__)


class RequestCache:
    """Content-addressed SQLite store of request → completions (and what the call cost).

    On an event loop, `put`s are group-committed: every answer stored during one pass of the loop is
    written in one transaction at the start of the next pass (a burst of 64 answers: one commit, not 64),
    so nothing waits longer than that pass, and `CachedModel` commits what is pending before it sends a
    request (an episode that goes on from an answer straight to its next call, as after the first-thought
    pass, never has two answers a crash could lose). Off a loop, `put` writes at once.

    A cache file this object created (a fresh run) holds only what it stored itself: it remembers those
    keys (up to `KEYS_IN_MEMORY`), so a miss costs no SQL query (and no hand-off of the GIL to other
    threads while SQLite runs). One opened on an existing file asks SQLite. Two runs writing one file at
    once are not supported (a fresh run would not see the other's answers)."""

    _INSERT = "INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?,?)"
    KEYS_IN_MEMORY = 1_000_000

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[Any, ...]] = {}  # key → row, written by the next flush()
        self._scheduled = False  # a flush is queued on the event loop
        # every key in the file, while this object is the only writer it has had (None: ask SQLite)
        self._keys: set[str] | None = None if self.path.exists() else set()
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
        row = self._pending.get(key)
        text = row[3] if row is not None else None
        if text is None and (self._keys is None or key in self._keys):
            found = self._conn().execute("SELECT response FROM requests WHERE key=?", (key,)).fetchone()
            text = found[0] if found else None
        return [Completion.model_validate(c) for c in json.loads(text)] if text is not None else None

    def put(self, key: str, model: str, request: dict[str, Any] | str, comps: list[Completion]) -> None:
        """Store `comps` for `request` (a dict, or its JSON text when the caller already has it)."""
        text = request if isinstance(request, str) else json.dumps(request, ensure_ascii=False, default=str)
        row = (key, model, text, json.dumps([c.model_dump(mode="json") for c in comps]),
               sum(c.cost_usd for c in comps), time.time())
        keys = self._keys
        if keys is not None:
            keys.add(key)
            if len(keys) > self.KEYS_IN_MEMORY:
                self._keys = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._conn().execute(self._INSERT, row)
            return
        with self._lock:
            self._pending[key] = row
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            loop.call_soon(self._flush_on_loop)

    def _flush_on_loop(self) -> None:
        with self._lock:
            self._scheduled = False
        self.commit_pending()

    def commit_pending(self) -> None:
        """Write what is pending now; on a write error keep it pending (retried with the next put, and by
        the final `flush`) and log, instead of raising."""
        if not self._pending:
            return
        try:
            self.flush()
        except (sqlite3.Error, OSError) as e:
            log.warning("request cache %s: %d answers not written yet: %s", self.path, len(self._pending), e)

    def flush(self) -> None:
        """Write every pending `put` in one transaction. If that fails, they stay pending and it raises."""
        with self._lock:
            rows, self._pending = self._pending, {}
        if rows:
            conn = self._conn()
            try:
                conn.execute("BEGIN")
                conn.executemany(self._INSERT, list(rows.values()))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                with self._lock:
                    self._pending = {**rows, **self._pending}
                raise

    def total_cost(self) -> float:
        self.flush()
        return float(self._conn().execute("SELECT COALESCE(SUM(cost_usd), 0) FROM requests").fetchone()[0])

    def __len__(self) -> int:
        self.flush()
        return int(self._conn().execute("SELECT COUNT(*) FROM requests").fetchone()[0])


class CachedModel(WrappedModel):
    """Replays identical requests (model, messages, sampling params, seed, prefill) from a `RequestCache`."""

    def __init__(self, inner: ChatModel, cache: RequestCache, *, stats: ClientStats | None = None):
        super().__init__(inner)
        self.cache = cache
        self.stats = stats if stats is not None else ClientStats()

    def request_key(self, messages: list[dict[str, Any]], kw: dict[str, Any]) -> tuple[str, str]:
        """(content address, canonical JSON of the request: stored as is, not encoded a second time)."""
        text = canonical_json({"model": self.inner.describe(), "messages": messages, **kw})
        return hashlib.sha256(text.encode()).hexdigest()[:32], text

    async def _generate(self, messages, **kw):
        # get/put run on the event loop: a point lookup costs a few µs and puts are group-committed once
        # per pass of the loop (no fsync), far less than a hop to a worker thread and back, which under
        # 64 concurrent episodes also fights the event loop for the GIL
        key, request = self.request_key(messages, kw)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return [c.model_copy(update={"cached": True}) for c in hit]
        self.stats.cache_misses += 1
        # answers received so far are durable before this request leaves: a crash while it is in flight
        # re-sends it alone, not also the answer it was built on (that answer's commit could still be
        # waiting for the next pass of the loop)
        self.cache.commit_pending()
        comps = await self.inner.generate(messages, **kw)
        self.cache.put(key, self.inner.name, request, comps)
        return comps

    async def aclose(self) -> None:
        self.cache.flush()
        await self.inner.aclose()
