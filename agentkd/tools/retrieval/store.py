"""The passages of an index, on disk beside it: `passages.jsonl` plus `passages.offsets.npy` (byte offset of
each row), so row i is read with one seek even for corpora far larger than memory."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from agentkd.tools.retrieval.types import Passage


def write_store(passages: Iterable[Passage], directory: str | os.PathLike) -> int:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    offsets = []
    tmp = d / "passages.jsonl.tmp"
    with tmp.open("wb") as f:
        for p in passages:
            offsets.append(f.tell())
            f.write(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False).encode() + b"\n")
    np.save(d / "passages.offsets.npy", np.asarray(offsets, dtype=np.int64))
    os.replace(tmp, d / "passages.jsonl")
    return len(offsets)


class PassageStore:
    def __init__(self, directory: str | os.PathLike):
        d = Path(directory)
        self.offsets = np.load(d / "passages.offsets.npy", mmap_mode="r")
        self._f = (d / "passages.jsonl").open("rb")
        self._size = (d / "passages.jsonl").stat().st_size

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> Passage:
        start = int(self.offsets[i])
        end = int(self.offsets[i + 1]) if i + 1 < len(self.offsets) else self._size
        row = json.loads(os.pread(self._f.fileno(), end - start, start))
        return Passage(row["id"], row["title"], row["text"])

    def close(self) -> None:
        self._f.close()
