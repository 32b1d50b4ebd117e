"""Loading tasks: the paper's JSON files, JSONL, HF `datasets`, and named suites from `evals/`."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from agentkd.core.config import ConfigError, StrictConfig
from agentkd.core.jsonl import iter_jsonl
from agentkd.core.types import Domain, Task


class FieldMap(StrictConfig):
    """Which record fields hold the task's id, question and answer."""

    id: str | None = Field(default="id", description="Field holding the id; null or absent → row index.")
    question: str = Field(default="question", description="Field holding the question text.")
    answer: str | None = Field(default="answer", description="Field holding the gold answer.")


class TaskSource(StrictConfig):
    """Where tasks come from: exactly one of `path`, `suite`, `hf`."""

    path: str | None = Field(default=None, description="JSON ({metadata, examples}, or a list) or JSONL file; globs allowed.")
    suite: str | None = Field(default=None, description="Name of a benchmark suite in evals/ (see `agentkd tasks suites`).")
    hf: str | None = Field(default=None, description="HF dataset id, loaded with datasets.load_dataset.")
    hf_config: str | None = Field(default=None, description="HF dataset config name.")
    split: str = Field(default="test", description="HF split to load.")
    fields: FieldMap = Field(default_factory=FieldMap, description="Field mapping for path/hf sources.")
    domain: Domain | None = Field(default=None, description="Override the domain (default: from suite or path).")
    source: str | None = Field(default=None, description="Source label stored on each task (default: file stem / suite).")
    offset: int = Field(default=0, ge=0, description="Skip this many tasks first.")
    limit: int | None = Field(default=None, ge=1, description="Keep at most this many tasks.")

    @model_validator(mode="after")
    def _one_source(self) -> TaskSource:
        n = sum(x is not None for x in (self.path, self.suite, self.hf))
        if n != 1:
            raise ValueError("set exactly one of path, suite or hf")
        return self


def _guess_domain(path: str) -> Domain:
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
    mapped = {fields.id, fields.question, fields.answer}
    for i, rec in enumerate(records):
        if fields.question not in rec:
            raise ConfigError(f"record {i} has no {fields.question!r} field (set fields.question)", file=where)
        meta = {k: v for k, v in rec.items() if k not in mapped}
        yield Task(
            id=str(rec.get(fields.id, i)) if fields.id else str(i),
            question=rec[fields.question],
            answer=rec.get(fields.answer) if fields.answer else None,
            domain=domain,
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


def _load_hf(src: TaskSource) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise ConfigError("loading from the HF hub needs `pip install agentkd[train]` (datasets)", path="tasks.hf") from None
    try:
        ds = datasets.load_dataset(src.hf, src.hf_config, split=src.split)
    except Exception as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        missing = type(e).__name__ in ("ConnectionError", "DatasetNotFoundError", "FileNotFoundError",
                                       "LocalEntryNotFoundError", "OfflineModeIsEnabled")
        hint = " (HF_HUB_OFFLINE=1 is set and the dataset is not in the local cache)" if offline and missing else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"could not load HF dataset {src.hf!r}{hint}: {first}", path="tasks.hf") from None
    yield from ds


def load_tasks(src: TaskSource) -> list[Task]:
    """Load the tasks a `TaskSource` names (applying offset/limit)."""
    if src.suite:
        from agentkd.core.suites import load_suite

        suite = load_suite(src.suite)
        tasks = suite.load(offset=src.offset, limit=src.limit)
        if src.domain:
            tasks = [t.model_copy(update={"domain": src.domain}) for t in tasks]
        return tasks
    if src.path:
        path = resolve_path(src.path)
        if path is None:
            raise ConfigError("no file matches", file=src.path, path="tasks.path")
        records: Iterator[dict[str, Any]] = records_from_file(path)
        where = str(path)
        source = src.source or path.stem
        domain = src.domain or _guess_domain(str(path))
    else:
        records = _load_hf(src)
        where = f"hf:{src.hf}"
        source = src.source or src.hf  # type: ignore[assignment]
        domain = src.domain or _guess_domain(src.hf or "")
    tasks = list(records_to_tasks(records, src.fields, domain=domain, source=source, where=where))
    end = None if src.limit is None else src.offset + src.limit
    return tasks[src.offset:end]
