"""Agent-aware dedupe: on what the agent *did* (its code actions), never on the templated prompt text.

* Exact: two trajectories of one task whose code-action sequences are equal after normalisation (parsed and
  unparsed with `ast`, which drops comments and fixes whitespace/quoting; a regex fallback for code that does
  not parse) are duplicates whatever their thoughts say; the first seen is kept. Only a 16-byte digest per
  kept (task, actions) is held.
* Near (optional, across tasks): MinHash over 5-token shingles of the normalised actions (64 hashes, numpy),
  with LSH banding to find candidates in O(1) per trajectory, then the estimated Jaccard similarity
  (share of equal hashes) decides. Fast and memory-light (256 bytes per kept trajectory), unlike pairwise
  difflib ratios, which are quadratic.
"""

from __future__ import annotations

import ast
import hashlib
import re
import zlib
from typing import Any

from agentkd.core.types import Trajectory

_COMMENT = re.compile(r"#[^\n]*")
_WS = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize_code(code: str) -> str:
    """Code with comments, blank lines and formatting normalised (ast round trip; regex fallback)."""
    try:
        return ast.unparse(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return _WS.sub(" ", _COMMENT.sub("", code)).strip()


def actions(traj: Trajectory) -> list[str]:
    """The normalised code actions of a trajectory, in order."""
    return [normalize_code(s.code) for s in traj.steps if s.code is not None]


def action_digest(task_key: str, codes: list[str]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(task_key.encode())
    for c in codes:
        h.update(b"\x00")
        h.update(c.encode())
    return h.digest()


class ExactDeduper:
    """Same task + same normalised action sequence → duplicate (first seen kept)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def seen(self, task_key: str, codes: list[str]) -> bool:
        d = action_digest(task_key, codes)
        if d in self._seen:
            return True
        self._seen.add(d)
        return False


_PERMS = 64
_PRIME = (1 << 31) - 1


def _bands_for(threshold: float) -> tuple[int, int]:
    """(bands, rows) with bands*rows = 64 whose LSH S-curve threshold (1/b)^(1/r) is the highest not above
    `threshold`: every pair at or above the threshold is very likely to share a band."""
    best = (64, 1)
    for rows in (1, 2, 4, 8, 16, 32, 64):
        bands = _PERMS // rows
        if (1 / bands) ** (1 / rows) <= threshold:
            best = (bands, rows)
    return best


class NearDeduper:
    """MinHash + LSH over code-token shingles; `seen` says whether a near-duplicate was kept before."""

    def __init__(self, threshold: float, *, shingle: int = 5, seed: int = 1):
        import numpy as np

        self.np = np
        self.threshold = threshold
        self.shingle = shingle
        rng = np.random.default_rng(seed)
        self._a = rng.integers(1, _PRIME, size=_PERMS, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, size=_PERMS, dtype=np.uint64)
        self.bands, self.rows = _bands_for(threshold)
        self._buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self._sigs: list[Any] = []

    def signature(self, codes: list[str]) -> Any:
        np = self.np
        toks = _TOKEN.findall("\n".join(codes))
        k = self.shingle
        grams = [" ".join(toks[i:i + k]) for i in range(max(1, len(toks) - k + 1))]
        h = np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=np.uint64, count=len(grams))
        return ((h[:, None] * self._a[None, :] + self._b[None, :]) % _PRIME).min(axis=0).astype(np.uint32)

    def seen(self, codes: list[str]) -> bool:
        sig = self.signature(codes)
        keys = [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]
        for band, key in enumerate(keys):
            for j in self._buckets[band].get(key, ()):
                if float((self._sigs[j] == sig).mean()) >= self.threshold:
                    return True
        idx = len(self._sigs)
        self._sigs.append(sig)
        for band, key in enumerate(keys):
            self._buckets[band].setdefault(key, []).append(idx)
        return False
