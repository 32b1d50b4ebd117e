"""Task suites: YAML files naming a task set, its domain, its scorer and where its tasks are.

Suites are looked up by name, first match wins, in:

1. `$AGENTKD_EVALS` (a folder), if set;
2. `./evals` in the working directory: where users add their own suites;
3. the suites shipped with agentkd (`agentkd/suites/*.yaml`, package data read with importlib.resources).

A suite's tasks come from the first of these that it names and that is present:

* `file:` a JSON/JSONL file beside the suite's YAML (the shipped quickstart suites keep theirs in the package);
* `local:` a file pattern under the data roots: `$AGENTKD_DATA` (if set), then `./data/benchmarks` and
  `../shared/data/benchmarks`, both relative to the working directory (the paper's files, which we cannot ship);
* `hub:` an HF dataset id, loaded with `datasets`.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr, model_validator

from agentkd.core.config import ConfigError, StrictConfig, load_yaml, validate
from agentkd.core.taskfiles import FieldMap, file_tasks, hub_tasks, resolve_path
from agentkd.core.types import Domain, Task

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11 on


class HubSource(StrictConfig):
    id: str = Field(description="HF dataset id.")
    config: str | None = Field(default=None, description="HF dataset config name.")
    split: str = Field(default="test", description="Split to load.")
    fields: FieldMap = Field(default_factory=FieldMap, description="Field mapping.")


class Suite(StrictConfig):
    """One task set."""

    name: str = Field(description="Suite name used on the command line (the YAML file's stem).")
    description: str = ""
    domain: Domain = Field(description="factual or math (the default when fields.domain reads it per task).")
    split: str = Field(description="'train' (trajectory source) or 'test' (held-out evaluation).")
    scorer: str = Field(description="Scorer name used by curate/evaluate (e.g. qa_em_f1, math_equiv).")
    count: int | None = Field(default=None, description="Expected number of tasks.")
    file: str | None = Field(default=None, description="JSON/JSONL task file, relative to the suite's YAML.")
    local: str | None = Field(default=None, description="File pattern under a data root (paper's JSON format).")
    fields: FieldMap = Field(default_factory=FieldMap, description="Field mapping for `file`/`local`.")
    hub: HubSource | None = Field(default=None, description="Where to load it from the HF hub instead.")
    _home: Any = PrivateAttr(default=None)  # the folder (a Traversable) the YAML was read from

    @model_validator(mode="after")
    def _has_source(self) -> Suite:
        if not (self.file or self.local or self.hub):
            raise ValueError("set at least one of file, local or hub")
        return self

    def local_path(self) -> Path | None:
        return resolve_path(self.local, data_roots()) if self.local else None

    def bundled(self) -> Traversable | None:
        """The suite's own task file (`file:`), if it names one that exists."""
        if self.file is None or self._home is None:
            return None
        f = self._home
        for part in Path(self.file).parts:  # one name per joinpath: Python 3.10's Traversable takes no more
            f = f.joinpath(part)
        return f if f.is_file() else None

    def where(self) -> str | None:
        """Where the tasks will be read from, or None if only the hub is left."""
        f = self.bundled()
        path = str(f) if f is not None else self.local_path()
        return str(path) if path else None

    def load(self, offset: int = 0, limit: int | None = None) -> list[Task]:
        kw = {"domain": self.domain, "source": self.name, "offset": offset, "limit": limit}
        f = self.bundled()
        if f is not None:
            with resources.as_file(f) as path:
                return file_tasks(path, self.fields, **kw)
        path = self.local_path()
        if path is not None:
            return file_tasks(path, self.fields, **kw)
        if self.hub is None:
            wanted = [f"file {self.file!r}"] if self.file else []
            if self.local:
                wanted.append(f"a file matching {self.local!r} under [{', '.join(str(r) for r in data_roots())}]")
            raise ConfigError(f"no {' or '.join(wanted)} and no hub source", path=f"suite {self.name}")
        return hub_tasks(self.hub.id, self.hub.config, self.hub.split, self.hub.fields, **kw)


def data_roots() -> list[Path]:
    """Where `local:` patterns are looked for (see the module docstring)."""
    roots = [Path(os.environ["AGENTKD_DATA"])] if os.environ.get("AGENTKD_DATA") else []
    roots += [Path.cwd() / "data" / "benchmarks", Path.cwd().parent / "shared" / "data" / "benchmarks"]
    return list(dict.fromkeys(roots))


def shipped_dir() -> Traversable:
    """The suites that ship inside the agentkd package."""
    return resources.files("agentkd").joinpath("suites")


def suite_dirs() -> list[Traversable]:
    dirs: list[Traversable] = []
    if os.environ.get("AGENTKD_EVALS"):
        dirs.append(Path(os.environ["AGENTKD_EVALS"]))
    dirs.append(Path.cwd() / "evals")
    dirs.append(shipped_dir())
    return [d for d in dirs if d.is_dir()]


def _catalogue() -> dict[str, tuple[Traversable, Traversable]]:
    """name -> (folder, YAML) of every suite; earlier folders shadow later ones."""
    found: dict[str, tuple[Traversable, Traversable]] = {}
    for d in suite_dirs():
        for f in sorted(d.iterdir(), key=lambda t: t.name):
            if f.name.endswith(".yaml") and f.is_file():
                found.setdefault(f.name[: -len(".yaml")], (d, f))
    return found


def list_suites() -> dict[str, Traversable]:
    """Every suite name with the YAML file that defines it."""
    return {name: f for name, (_, f) in _catalogue().items()}


def load_suite(name: str) -> Suite:
    """A suite by name, or from a suite .yaml path."""
    if name.endswith((".yaml", ".yml")):
        home, ref = Path(name).parent, Path(name)
    else:
        home, ref = _catalogue().get(name, (None, None))
    if ref is None or not ref.is_file():
        known = ", ".join(sorted(list_suites())) or "none found"
        raise ConfigError(f"unknown suite (known: {known})", path=f"suite {name}")
    with resources.as_file(ref) as path:
        suite = validate(Suite, load_yaml(path), file=path)
        if suite.name != path.stem:
            raise ConfigError(f"suite name {suite.name!r} must match the file name", file=path, path="name")
    suite._home = home
    return suite
