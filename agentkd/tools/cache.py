"""Tool-result cache: content-addressed by (tool name, bound arguments, tool config hash), in SQLite.

One file is shared by every thread and process of a run (collection workers, evaluation): WAL mode, a busy
timeout, one connection per process guarded by a lock. Errors are never cached. `ToolCache.stats()` gives
the hit/miss counters of this process for run summaries. Tools are wrapped by composition: `CachedTool`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agentkd.core.hashing import stable_hash
from agentkd.tools.base import Tool

_SHARED: dict[str, ToolCache] = {}
_SHARED_LOCK = threading.Lock()


class ToolCache:
    @classmethod
    def shared(cls, path: str | os.PathLike) -> ToolCache:
        """One instance per file in this process, so every tool set built from the same config counts hits and
        misses together (the numbers a run summary reports)."""
        key = str(Path(path).resolve())
        with _SHARED_LOCK:
            if key not in _SHARED:
                _SHARED[key] = cls(key)
            return _SHARED[key]

    def __init__(self, path: str | os.PathLike, *, timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self.hits = 0
        self.misses = 0
        self.per_tool: dict[str, dict[str, int]] = {}
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():  # a forked child opens its own connection
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS tool_results (key TEXT PRIMARY KEY, tool TEXT NOT NULL, "
                "args TEXT NOT NULL, value TEXT NOT NULL, created REAL)"
            )
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    @staticmethod
    def key(tool: str, args: dict[str, Any], config_hash: str) -> str:
        return stable_hash({"tool": tool, "args": args, "config": config_hash}, length=64)

    def _count(self, tool: str, hit: bool) -> None:
        c = self.per_tool.setdefault(tool, {"hits": 0, "misses": 0})
        if hit:
            self.hits += 1
            c["hits"] += 1
        else:
            self.misses += 1
            c["misses"] += 1

    def get(self, key: str, tool: str = "") -> tuple[bool, Any]:
        """(found, value); counts a hit or a miss for `tool`."""
        with self._lock:
            row = self._connect().execute("SELECT value FROM tool_results WHERE key = ?", (key,)).fetchone()
            self._count(tool, row is not None)
        return (True, json.loads(row[0])) if row else (False, None)

    def put(self, key: str, tool: str, args: dict[str, Any], value: Any) -> None:
        data = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._connect().execute(
                "INSERT OR REPLACE INTO tool_results (key, tool, args, value, created) VALUES (?, ?, ?, ?, ?)",
                (key, tool, json.dumps(args, ensure_ascii=False, sort_keys=True, default=str), data, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM tool_results").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            total = self.hits + self.misses
            return {"hits": self.hits, "misses": self.misses, "hit_rate": self.hits / total if total else 0.0,
                    "per_tool": {k: dict(v) for k, v in self.per_tool.items()}}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def cache_stats(tools: Mapping[str, Tool] | Iterable[Tool]) -> dict[str, Any] | None:
    """Hit/miss counters of the cache behind a tool set (None when its tools are not cached)."""
    for tool in tools.values() if isinstance(tools, Mapping) else tools:
        if isinstance(tool, CachedTool):
            return tool.cache.stats()
    return None


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


class CachedTool(Tool):
    """`tool` with its results looked up in / stored to `cache`. Same name, inputs and prompt rendering."""

    def __init__(self, tool: Tool, cache: ToolCache):
        self.tool = tool
        self.cache = cache
        self.name = tool.name  # type: ignore[misc]
        self.description = tool.description  # type: ignore[misc]
        self.inputs = tool.inputs  # type: ignore[misc]
        self.output_type = tool.output_type  # type: ignore[misc]

    def config_hash(self) -> str:
        return self.tool.config_hash()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bound = self.tool.bind(*args, **kwargs)
        if not _jsonable(bound):
            return self.tool.forward(**bound)
        key = ToolCache.key(self.name, bound, self.tool.config_hash())
        found, value = self.cache.get(key, self.name)
        if found:
            return value
        value = self.tool.forward(**bound)
        if _jsonable(value):
            self.cache.put(key, self.name, bound, value)
        return value

    def __getattr__(self, item: str) -> Any:
        return getattr(self.__dict__["tool"], item)
