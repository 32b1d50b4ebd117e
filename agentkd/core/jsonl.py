"""Crash-safe JSONL files.

* Appends are one `os.write` of a whole line on an `O_APPEND` descriptor, so a killed process leaves at
  most one torn line: the last one. `durable=True` also fsyncs every append (survives an OS crash or
  power loss); otherwise the file is fsynced on close.
* Reading streams line by line; a torn last line (no newline, or unparsable) is skipped with a warning,
  never an exception. Opening a store for appending first repairs such a tail (the torn bytes are moved
  to `<file>.torn` so nothing is silently lost), so the next append starts on a fresh line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def _dumps(obj: Any) -> str:
    if isinstance(obj, BaseModel):
        return obj.model_dump_json()
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def iter_jsonl(path: str | os.PathLike, *, warn: bool = True) -> Iterator[dict[str, Any]]:
    """Yield each JSON object of a JSONL file, streaming; torn or corrupt lines are skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as f:
        lineno = 0
        for raw in f:
            lineno += 1
            if not raw.strip():
                continue
            torn = not raw.endswith(b"\n")
            try:
                obj = json.loads(raw)
            except ValueError:
                if warn:
                    what = "torn last line" if torn else "corrupt line"
                    log.warning("%s:%d: skipping %s (%d bytes)", path, lineno, what, len(raw))
                continue
            if torn and warn:
                log.warning("%s:%d: last line has no newline (crash during write?); using it", path, lineno)
            yield obj


def read_models(path: str | os.PathLike, model: type[M]) -> Iterator[M]:
    for obj in iter_jsonl(path):
        yield model.model_validate(obj)


def repair_tail(path: str | os.PathLike) -> int:
    """Cut a torn final line off `path` (saving it to `<path>.torn`). Returns the number of bytes cut."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        # find the start of the last line
        block = 1 << 16
        pos = size
        start = 0
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                start = pos + nl + 1
                break
        f.seek(start)
        tail = f.read()
        try:
            json.loads(tail)
            f.seek(0, os.SEEK_END)
            f.write(b"\n")  # complete line that only lacked its newline: keep it
            return 0
        except ValueError:
            pass
        with open(str(path) + ".torn", "ab") as t:
            t.write(tail + b"\n")
        f.truncate(start)
    log.warning("%s: removed a torn last line of %d bytes (kept in %s.torn)", path, len(tail), path)
    return len(tail)


class JsonlStore:
    """Append-only JSONL file shared by the threads/tasks of one process."""

    def __init__(self, path: str | os.PathLike, *, durable: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        repair_tail(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def append(self, obj: Any) -> None:
        self.extend([obj])

    def extend(self, objs: Iterable[Any]) -> None:
        data = "".join(_dumps(o) + "\n" for o in objs).encode()
        if not data:
            return
        with self._lock:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            if self.durable:
                os.fsync(self._fd)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter_jsonl(self.path)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
