"""`RunFolder`: a run's files on disk, and what resuming it means.

    OUT/config.yaml         the resolved config the run was started with
    OUT/trajectories.jsonl  one line per finished (task, sample); a killed run leaves at most one torn line,
                            which is set aside in trajectories.jsonl.torn when the folder is opened again
    OUT/failed.jsonl        episodes that ended in infrastructure failures: kept for inspection, retried
                            by the next run, never taken for answers
    OUT/cache.sqlite        every model request and response (a resumed run replays them for free)
    OUT/summary.json        the last run's `RunSummary` (written whole, atomically)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from agentkd.core.config import ConfigError
from agentkd.core.jsonl import JsonlStore, iter_jsonl
from agentkd.core.types import Task, Trajectory
from agentkd.engine.summary import RunSummary
from agentkd.engine.worker import EpisodeSpec

_YamlDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when built with it: same output, ~5x faster


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.trajectories = self.path / "trajectories.jsonl"
        self.failed = self.path / "failed.jsonl"
        self.cache_path = self.path / "cache.sqlite"
        self.summary_path = self.path / "summary.json"
        self.config_path = self.path / "config.yaml"
        self._stores: tuple[JsonlStore, JsonlStore] | None = None
        self._keys: set[tuple[str, int]] | None = None  # read once; `store` adds what it writes

    def write_config(self, config: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.config_path, yaml.dump(config, Dumper=_YamlDumper, sort_keys=False))

    def finished_keys(self) -> set[tuple[str, int]]:
        """`Trajectory.key` of every stored trajectory. The file is read (streamed; torn lines skipped) on the
        first call only; what this object stores afterwards is added, so a run's summary needs no second read."""
        if self._keys is None:
            keys = set()
            for obj in iter_jsonl(self.trajectories):
                task = obj.get("task", {})
                key = f"{task['source']}/{task['id']}" if task.get("source") else task.get("id")
                keys.add((key, obj.get("provenance", {}).get("sample_index", 0)))
            self._keys = keys
        return set(self._keys)

    def todo(self, tasks: Iterable[Task], *, samples: int, seed: int) -> list[EpisodeSpec]:
        """Every (task, sample) not stored yet, in task order; sample s uses seed + s. Task keys must be
        unique (resume is by key)."""
        seen: set[str] = set()
        done = self.finished_keys()
        specs = []
        for t in tasks:
            if t.key in seen:
                raise ConfigError(f"duplicate task id {t.key!r}: ids must be unique for resume to work", path="tasks")
            seen.add(t.key)
            specs += [EpisodeSpec(t, s, seed + s) for s in range(samples) if (t.key, s) not in done]
        return specs

    # -- writing: the driver only -----------------------------------------------------------------------
    def open(self) -> None:
        """Open the trajectory and failure stores for appending (repairing a torn tail first)."""
        self.path.mkdir(parents=True, exist_ok=True)
        # appends are single write()s, safe against a killed process; fsync once at the end, not per line
        self._stores = (JsonlStore(self.trajectories, durable=False), JsonlStore(self.failed))

    def store(self, traj: Trajectory) -> None:
        assert self._stores is not None, "RunFolder.open() first"
        if traj.status == "error":
            self._stores[1].append(traj)
            return
        self.finished_keys()  # known before the file grows
        self._stores[0].append(traj)
        self._keys.add(traj.key)  # type: ignore[union-attr]

    def close(self) -> None:
        if self._stores is not None:
            for s in self._stores:
                s.close()
            self._stores = None

    def write_summary(self, summary: RunSummary) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.summary_path, summary.model_dump_json(indent=2))

    def read_summary(self) -> RunSummary | None:
        return RunSummary.model_validate_json(self.summary_path.read_text()) if self.summary_path.exists() else None


def _atomic_write(path: Path, text: str) -> None:
    """The whole file or the old one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
