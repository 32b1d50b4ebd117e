"""Reading task records: the paper's JSON files, JSONL and HF datasets, mapped to `Task`s by a `FieldMap`.

The layer under both `agentkd.core.tasks` (task sources in recipes) and `agentkd.core.suites` (named
suites), so neither of those has to import the other to read a file.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import Field

from agentkd.core.config import ConfigError, StrictConfig
from agentkd.core.jsonl import iter_jsonl
from agentkd.core.types import Domain, Task

DOMAINS: tuple[str, ...] = get_args(Domain)


class FieldMap(StrictConfig):
    """Which record fields hold the task's id, question and answer."""

    id: str | None = Field(default="id", description="Field holding the id; null or absent → row index.")
    question: str = Field(default="question", description="Field holding the question text.")
    answer: str | None = Field(default="answer", description="Field holding the gold answer.")
    domain: str | None = Field(default=None, description="Field holding each task's domain (factual/math), for task "
                               "sets that mix them; null → the source's domain for every task.")


def guess_domain(path: str) -> Domain:
    p = path.lower()
    return "math" if any(w in p for w in ("math", "gsm", "aime", "olym")) else "factual"


def records_from_file(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".jsonl":
        yield from iter_jsonl(path)
        return
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"not valid JSON: {e}", file=path) from None
    if isinstance(data, dict) and "examples" in data:
        data = data["examples"]
    if not isinstance(data, list):
        raise ConfigError("expected {'examples': [...]} or a list of records", file=path)
    yield from data


def records_to_tasks(
    records: Iterator[dict[str, Any]], fields: FieldMap, *, domain: Domain, source: str, where: str
) -> Iterator[Task]:
    mapped = {fields.id, fields.question, fields.answer, fields.domain}
    for i, rec in enumerate(records):
        if fields.question not in rec:
            raise ConfigError(f"record {i} has no {fields.question!r} field (set fields.question)", file=where)
        own = rec.get(fields.domain) if fields.domain else None
        if own is not None and own not in DOMAINS:
            raise ConfigError(f"record {i}: {fields.domain} {own!r} is not one of {', '.join(DOMAINS)}", file=where)
        meta = {k: v for k, v in rec.items() if k not in mapped}
        yield Task(
            id=str(rec.get(fields.id, i)) if fields.id else str(i),
            question=rec[fields.question],
            answer=rec.get(fields.answer) if fields.answer else None,
            domain=own or domain,
            source=source,
            metadata=meta,
        )


def resolve_path(pattern: str, roots: list[Path] | None = None) -> Path | None:
    """First file matching `pattern` (absolute, or under one of `roots`)."""
    candidates = [pattern] if os.path.isabs(pattern) or not roots else [str(r / pattern) for r in roots]
    for c in candidates:
        hits = sorted(glob.glob(os.path.expanduser(c)))
        if hits:
            return Path(hits[-1])
    return None


def hf_records(name: str, config: str | None, split: str) -> Iterator[dict[str, Any]]:
    """The rows of an HF dataset (`datasets.load_dataset`), or a one-line error saying why not."""
    try:
        import datasets
    except ImportError:
        raise ConfigError("loading from the HF hub needs `pip install agentkd[train]` (datasets)", path="tasks.hf") from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        missing = type(e).__name__ in ("ConnectionError", "DatasetNotFoundError", "FileNotFoundError",
                                       "LocalEntryNotFoundError", "OfflineModeIsEnabled")
        hint = " (HF_HUB_OFFLINE=1 is set and the dataset is not in the local cache)" if offline and missing else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"could not load HF dataset {name!r}{hint}: {first}", path="tasks.hf") from None
    yield from ds


def select(tasks: Iterator[Task], offset: int = 0, limit: int | None = None) -> list[Task]:
    """Tasks `offset` to `offset + limit` of a stream."""
    out = list(tasks)
    end = None if limit is None else offset + limit
    return out[offset:end]


def file_tasks(path: Path, fields: FieldMap, *, domain: Domain | None = None, source: str | None = None,
               offset: int = 0, limit: int | None = None) -> list[Task]:
    """The tasks in one JSON/JSONL file (domain guessed from the path when not given)."""
    tasks = records_to_tasks(records_from_file(path), fields, domain=domain or guess_domain(str(path)),
                             source=source or path.stem, where=str(path))
    return select(tasks, offset, limit)


def hub_tasks(name: str, config: str | None, split: str, fields: FieldMap, *, domain: Domain | None = None,
              source: str | None = None, offset: int = 0, limit: int | None = None) -> list[Task]:
    """The tasks in an HF dataset split."""
    tasks = records_to_tasks(hf_records(name, config, split), fields, domain=domain or guess_domain(name),
                             source=source or name, where=f"hf:{name}")
    return select(tasks, offset, limit)
