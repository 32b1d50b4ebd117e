"""Reading run folders for curation: streamed, validated, every bad line reported with file and line.

A run folder is never written here (scores go to its `scores.jsonl` sidecar through agentkd.score).
Each trajectory line is parsed straight from bytes into a `Trajectory`; its byte offset and length are kept
so the export pass can re-read exactly the lines it needs (`read_at`) without holding trajectories.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentkd.core.errors import EXIT_CONFIG, AgentkdError
from agentkd.core.types import SCHEMA_VERSION, Trajectory

log = logging.getLogger(__name__)


class CurateError(AgentkdError):
    """Bad curation input or output (a run, a line, a dataset folder): one line, exit code 2."""

    exit_code = EXIT_CONFIG


@dataclass
class BadLine:
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


@dataclass
class RunInfo:
    """One input run: where it is, what made it (hashes of its config and summary), what its agent saw."""

    path: Path
    tools: dict[str, Any] | None = None
    max_steps: int | None = None
    config_sha256: str | None = None
    summary_sha256: str | None = None
    trajectories_sha256: str | None = None
    lines: int = 0
    bad: list[BadLine] = field(default_factory=list)

    @property
    def trajectories(self) -> Path:
        return self.path / "trajectories.jsonl"

    def card(self) -> dict[str, Any]:
        return {"path": str(self.path), "config_sha256": self.config_sha256, "summary_sha256": self.summary_sha256,
                "trajectories_sha256": self.trajectories_sha256, "lines": self.lines, "bad_lines": len(self.bad)}


def _sha(path: Path) -> str | None:
    if not path.is_file():
        return None
    from agentkd.core.hashing import file_sha256

    return file_sha256(path)


def open_run(path: str | os.PathLike) -> RunInfo:
    """Check a run folder and read its config (tools, step limit) and provenance hashes."""
    p = Path(path)
    if not (p / "trajectories.jsonl").is_file():
        what = "not found" if not p.exists() else "not a run folder (no trajectories.jsonl)"
        raise CurateError(f"{p}: {what}")
    info = RunInfo(path=p, config_sha256=_sha(p / "config.yaml"), summary_sha256=_sha(p / "summary.json"))
    if (p / "config.yaml").is_file():
        from agentkd.core.config import load_yaml

        data = load_yaml(p / "config.yaml")
        stage = next((data[k] for k in ("collect", "evaluate") if isinstance(data.get(k), dict)), {})
        info.tools = stage.get("tools") if isinstance(stage.get("tools"), dict) else None
        agent = stage.get("agent") if isinstance(stage.get("agent"), dict) else {}
        info.max_steps = agent.get("max_steps")
    return info


def _why(raw: bytes, err: ValidationError) -> str:
    """A one-phrase reason for a line that is not a trajectory of this schema."""
    kinds = {e["type"] for e in err.errors()}
    if "json_invalid" in kinds:
        return "torn line (not valid JSON)" if not raw.endswith(b"\n") else "corrupt line (not valid JSON)"
    import json

    try:
        obj = json.loads(raw)
    except ValueError:
        return "corrupt line (not valid JSON)"
    if isinstance(obj, dict) and "schema_version" in obj and obj["schema_version"] != SCHEMA_VERSION:
        return f"trajectory schema_version {obj['schema_version']!r} (this agentkd reads {SCHEMA_VERSION})"
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
    return f"not a trajectory ({loc}: {e['msg']})"


def iter_run(info: RunInfo) -> Iterator[tuple[int, int, Trajectory]]:
    """Yield (byte offset, byte length, trajectory) for every good line; bad lines go to `info.bad` (and are
    logged); a line of another schema version raises at once (its fields cannot be trusted)."""
    h = hashlib.sha256()
    offset = 0
    lineno = 0
    with info.trajectories.open("rb") as f:
        for raw in f:
            lineno += 1
            h.update(raw)
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                traj = Trajectory.model_validate_json(raw)
            except ValidationError as e:
                why = _why(raw, e)
                if why.startswith("trajectory schema_version"):
                    raise CurateError(f"{info.trajectories}:{lineno}: {why}") from None
                bad = BadLine(str(info.trajectories), lineno, why)
                log.warning("%s", bad)
                info.bad.append(bad)
                continue
            if traj.schema_version != SCHEMA_VERSION:
                raise CurateError(f"{info.trajectories}:{lineno}: trajectory schema_version {traj.schema_version} "
                                  f"(this agentkd reads {SCHEMA_VERSION})")
            yield start, len(raw), traj
    info.lines = lineno
    info.trajectories_sha256 = h.hexdigest()


class LineReader:
    """Random access to lines of the input runs by (run index, offset, length), one open file per run."""

    def __init__(self, runs: list[RunInfo]):
        self._fds = [os.open(r.trajectories, os.O_RDONLY) for r in runs]

    def read(self, run: int, offset: int, length: int) -> Trajectory:
        return Trajectory.model_validate_json(os.pread(self._fds[run], length, offset))

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
