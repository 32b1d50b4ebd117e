"""Task sources in recipes: a JSON/JSONL file, an HF dataset, or a named suite (`agentkd.core.suites`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from agentkd.core.config import ConfigError, StrictConfig
from agentkd.core.suites import load_suite
from agentkd.core.taskfiles import FieldMap, file_tasks, hub_tasks, resolve_path
from agentkd.core.types import Domain, Task

__all__ = ["FieldMap", "TaskSource", "load_tasks"]


class TaskSource(StrictConfig):
    """Where tasks come from: exactly one of `path`, `suite`, `hf`."""

    path: str | None = Field(default=None, description="JSON ({metadata, examples}, or a list) or JSONL file; globs allowed.")
    suite: str | None = Field(default=None, description="Name of a suite: shipped with agentkd, or a YAML in $AGENTKD_EVALS "
                              "or ./evals (see `agentkd tasks suites`), or a suite .yaml path.")
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


def load_tasks(src: TaskSource) -> list[Task]:
    """Load the tasks a `TaskSource` names (applying offset/limit)."""
    if src.suite:
        tasks = load_suite(src.suite).load(offset=src.offset, limit=src.limit)
        if src.domain:
            tasks = [t.model_copy(update={"domain": src.domain}) for t in tasks]
        return tasks
    if src.path:
        path = resolve_path(src.path)
        if path is None:
            raise ConfigError("no file matches", file=src.path, path="tasks.path")
        return file_tasks(path, src.fields, domain=src.domain, source=src.source, offset=src.offset, limit=src.limit)
    return hub_tasks(src.hf or "", src.hf_config, src.split, src.fields, domain=src.domain, source=src.source,
                     offset=src.offset, limit=src.limit)
