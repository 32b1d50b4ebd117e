"""The scores sidecar `RUN/scores.jsonl`: one JSON line per scored trajectory, keyed by trajectory key.

    {"key": ["hotpotqa/5a8b", 0], "correct": 1.0, "metrics": {"em": 1.0, "f1": 1.0, "cover": 1.0},
     "scorer": "qa_em_f1", "reason": null, "judge": null}

`trajectories.jsonl` is never touched. Lines are appended with `agentkd.core.jsonl` (whole-line writes, a
torn tail is set aside on the next open), so a killed scorer loses at most the line it was writing. A key
may appear more than once (a later `--judge` pass appends the judged score): the last line wins.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agentkd.core.jsonl import JsonlStore, iter_jsonl
from agentkd.score.base import ScoreResult

log = logging.getLogger(__name__)
SCORES_FILE = "scores.jsonl"
Key = tuple[str, int]


def scores_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / SCORES_FILE


def score_line(key: Key, result: ScoreResult) -> dict[str, Any]:
    return {"key": [key[0], key[1]], "correct": result.correct, "metrics": result.metrics, "scorer": result.scorer,
            "reason": result.reason, "judge": result.judge}


def read_score_records(run_dir: str | os.PathLike) -> dict[Key, dict[str, Any]]:
    """key → the last stored line for it, as a plain dict (no validation: cheap for large runs)."""
    out: dict[Key, dict[str, Any]] = {}
    for obj in iter_jsonl(scores_path(run_dir)):
        key = obj.get("key") if isinstance(obj, dict) else None
        if (isinstance(key, list) and len(key) == 2 and isinstance(key[1], int) and "correct" in obj
                and isinstance(obj.get("metrics"), dict) and "scorer" in obj):
            out[(str(key[0]), key[1])] = obj
        else:  # not one of ours: its trajectory is scored again
            log.warning("%s: skipping a line that is not a score (%.60s)", scores_path(run_dir), json.dumps(obj))
    return out


def read_scores(run_dir: str | os.PathLike) -> dict[Key, ScoreResult]:
    """key → `ScoreResult` for every scored trajectory of a run (the last line per key wins)."""
    return {k: ScoreResult.model_validate({f: v for f, v in obj.items() if f != "key"})
            for k, obj in read_score_records(run_dir).items()}


class ScoreWriter:
    """Appends score lines to RUN/scores.jsonl in batches: one whole-lines write per batch, fsync on close (a
    line lost to an OS crash is only scored again by the next run)."""

    def __init__(self, run_dir: str | os.PathLike, *, batch: int = 512):
        self._store = JsonlStore(scores_path(run_dir), durable=False)  # fsync on close; a lost line is rescored
        self._batch = batch
        self._pending: list[dict[str, Any]] = []
        self.written = 0

    def add(self, key: Key, result: ScoreResult) -> None:
        self.add_lines([score_line(key, result)])

    def add_lines(self, lines: Iterable[dict[str, Any]]) -> None:
        self._pending.extend(lines)
        if len(self._pending) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._store.extend(self._pending)
            self.written += len(self._pending)
            self._pending = []

    def close(self) -> None:
        self.flush()
        self._store.close()

    def __enter__(self) -> ScoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
