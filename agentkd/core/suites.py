"""Benchmark suites: YAML files in `evals/` naming a task set, its domain, scorer and where to load it.

A suite is looked for in `$AGENTKD_EVALS` (if set), `./evals`, and the `evals/` folder of the agentkd
checkout. Its local file pattern is resolved under the data roots: `$AGENTKD_DATA` (if set),
`./data/benchmarks`, and `../shared/data/benchmarks` beside the checkout or the working directory.
When no local file matches, the suite falls back to its HF hub id.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from agentkd.core.config import ConfigError, StrictConfig, load_yaml, validate
from agentkd.core.tasks import (
    FieldMap,
    TaskSource,
    load_tasks,
    resolve_path,
)
from agentkd.core.types import Domain, Task

REPO_ROOT = Path(__file__).resolve().parents[2]


class HubSource(StrictConfig):
    id: str = Field(description="HF dataset id.")
    config: str | None = Field(default=None, description="HF dataset config name.")
    split: str = Field(default="test", description="Split to load.")
    fields: FieldMap = Field(default_factory=FieldMap, description="Field mapping.")


class Suite(StrictConfig):
    """One benchmark/task set."""

    name: str = Field(description="Suite name used on the command line.")
    description: str = ""
    domain: Domain = Field(description="factual or math.")
    split: str = Field(description="'train' (trajectory source) or 'test' (held-out evaluation).")
    scorer: str = Field(description="Scorer name used by curate/evaluate (e.g. qa_em_f1, math_equiv).")
    count: int | None = Field(default=None, description="Expected number of tasks in the local file.")
    local: str | None = Field(default=None, description="File pattern under a data root (paper's JSON format).")
    fields: FieldMap = Field(default_factory=FieldMap, description="Field mapping for the local file.")
    hub: HubSource | None = Field(default=None, description="Where to load it from the HF hub instead.")

    def local_path(self) -> Path | None:
        return resolve_path(self.local, data_roots()) if self.local else None

    def load(self, offset: int = 0, limit: int | None = None) -> list[Task]:
        path = self.local_path()
        if path is not None:
            return load_tasks(TaskSource(path=str(path), fields=self.fields, domain=self.domain, source=self.name,
                                         offset=offset, limit=limit))
        if self.hub is None:
            roots = ", ".join(str(r) for r in data_roots())
            raise ConfigError(f"no local file matches {self.local!r} under [{roots}] and no hub source",
                              path=f"suite {self.name}")
        src = TaskSource(hf=self.hub.id, hf_config=self.hub.config, split=self.hub.split, fields=self.hub.fields,
                         domain=self.domain, source=self.name, offset=offset, limit=limit)
        return load_tasks(src)


def data_roots() -> list[Path]:
    roots = []
    if os.environ.get("AGENTKD_DATA"):
        roots.append(Path(os.environ["AGENTKD_DATA"]))
    roots += [Path.cwd() / "data" / "benchmarks", REPO_ROOT.parent / "shared" / "data" / "benchmarks",
              Path.cwd().parent / "shared" / "data" / "benchmarks"]
    seen, out = set(), []
    for r in roots:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def suite_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("AGENTKD_EVALS"):
        dirs.append(Path(os.environ["AGENTKD_EVALS"]))
    dirs += [Path.cwd() / "evals", REPO_ROOT / "evals"]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def list_suites() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in suite_dirs():
        for f in sorted(d.glob("*.yaml")):
            found.setdefault(f.stem, f)
    return found


def load_suite(name: str) -> Suite:
    path = Path(name) if name.endswith((".yaml", ".yml")) else list_suites().get(name)
    if path is None or not path.exists():
        known = ", ".join(sorted(list_suites())) or "none found"
        raise ConfigError(f"unknown suite (known: {known})", path=f"suite {name}")
    suite = validate(Suite, load_yaml(path), file=path)
    if suite.name != path.stem:
        raise ConfigError(f"suite name {suite.name!r} must match the file name", file=path, path="name")
    return suite
