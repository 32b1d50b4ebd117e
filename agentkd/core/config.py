"""Typed configs from YAML recipes, with `--set a.b=value` overrides and one-line errors.

Each stage keeps its pydantic config beside its code (e.g. `agentkd.serve.config.ServeConfig`). A recipe
is a YAML file whose top-level keys are sections; `SECTIONS` maps a section name to the config class
(imported lazily, so loading a recipe never pulls in torch).

One recipe shape: a *stage* section (`collect`, and `evaluate` next) is read by its command; `serve` and
`index` by `agentkd serve --config` and `agentkd index build --config`. The *shared* sections (`SHARED`:
`tools`, `sandbox`) say once what every stage uses: each is the default of the field of the same name in
every stage section that has one, and a stage's own keys win, key by key:

    tools:   {search: {index: embedded:wiki-vital, k: 3}}
    sandbox: {memory_mb: 1024}
    collect: {tasks: ..., tools: {search: {k: 5}}}      # collect.tools.search = {index: embedded:wiki-vital, k: 5}

What a stage needs of its own (tasks, the teacher or student model, the agent loop) lives in its section.
"""

from __future__ import annotations

import importlib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from agentkd.core.errors import EXIT_CONFIG, AgentkdError

C = TypeVar("C", bound=BaseModel)

# section name -> "module:Class". Stages register here as they land.
SECTIONS: dict[str, str] = {
    "tools": "agentkd.tools.config:ToolsConfig",
    "sandbox": "agentkd.sandbox.config:SandboxConfig",
    "collect": "agentkd.collect.config:CollectConfig",
    "serve": "agentkd.serve.config:ServeConfig",
    "index": "agentkd.tools.config:IndexConfig",
    "evaluate": "agentkd.evaluate.config:EvalConfig",
    "score": "agentkd.score.config:ScoreConfig",
    "curate": "agentkd.curate.config:CurateConfig",
    "train": "agentkd.train.config:TrainConfig",
    "run": "agentkd.pipeline.config:RunConfig",
}
# sections that are the defaults of the same-named field of every stage section that has one
SHARED = ("tools", "sandbox")


class ConfigError(AgentkdError):
    """A recipe/config problem: the message is one line naming the file and key path."""

    exit_code = EXIT_CONFIG

    def __init__(self, message: str, *, file: str | os.PathLike | None = None, path: str | None = None):
        self.file = str(file) if file else None
        self.path = path
        where = ": ".join(p for p in (self.file, path) if p)
        super().__init__(f"{where}: {message}" if where else message)


class StrictConfig(BaseModel):
    """Base for every stage config: unknown keys are errors, fields are documented in place."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def section_class(name: str) -> type[BaseModel]:
    target = SECTIONS[name]
    mod, _, cls = target.partition(":")
    return getattr(importlib.import_module(mod), cls)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError("file not found", file=p)
    if p.is_dir():
        raise ConfigError("is a directory, expected a YAML file", file=p)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"line {mark.line + 1}" if mark else None
        raise ConfigError(f"invalid YAML: {getattr(e, 'problem', e)}", file=p, path=loc) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", file=p)
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like a.b.c=value", file="--set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b.c=value` applied (value parsed as YAML)."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides or []:
        keys, value = parse_override(item)
        node = out
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is not a mapping", file="--set")
            node = nxt
        node[keys[-1]] = value
    return out


def _loc(loc: tuple[Any, ...], prefix: str | None) -> str:
    parts = [prefix] if prefix else []
    for p in loc:
        if isinstance(p, int) and parts:
            parts[-1] = f"{parts[-1]}[{p}]"
        else:
            parts.append(str(p))
    return ".".join(parts) or "(top level)"


def _validation_message(e: ValidationError) -> tuple[str, str]:
    err = e.errors()[0]
    more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    else:
        got = err.get("input")
        got_s = repr(got)
        if len(got_s) > 60:
            got_s = got_s[:57] + "..."
        msg = f"{err['msg']} (got {got_s})"
    return err["loc"], msg + more


def validate(cls: type[C], data: Any, *, file: str | os.PathLike | None = None, prefix: str | None = None) -> C:
    try:
        return cls.model_validate(data if data is not None else {})
    except ValidationError as e:
        loc, msg = _validation_message(e)
        raise ConfigError(msg, file=file, path=_loc(loc, prefix)) from None


def load_config(
    cls: type[C],
    path: str | os.PathLike | None = None,
    *,
    section: str | None = None,
    overrides: list[str] | None = None,
) -> C:
    """Load one config: from `path` (whole file, or its `section`), then overrides, then validate."""
    data: dict[str, Any] = load_yaml(path) if path else {}
    if section and path:
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError("unknown section", file=path, path=unknown[0])
        data = data.get(section) or {}
    data = apply_overrides(data, overrides)
    return validate(cls, data, file=path or "--set", prefix=section)


def merge(base: Any, over: Any) -> Any:
    """`over` laid on `base`: mappings merge key by key (recursively), anything else in `over` wins."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: merge(base.get(k), v) if k in base else v for k, v in over.items()}}
    return over


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> dict[str, BaseModel]:
    """Load every section of a recipe file into its config; the shared sections (`SHARED`) are laid
    under the same-named field of each stage section."""
    data = apply_overrides(load_yaml(path), overrides)
    for name in data:
        if name not in SECTIONS:
            known = ", ".join(sorted(SECTIONS))
            raise ConfigError(f"unknown section (known: {known})", file=path, path=str(name))
    out: dict[str, BaseModel] = {}
    for name in sorted(data, key=lambda n: n not in SHARED):  # a shared section's errors name it, not a stage
        value = data[name]
        cls = section_class(name)
        if name not in SHARED:
            value = dict(value or {}) if isinstance(value, dict) or value is None else value
            for shared in SHARED:
                if shared in data and shared in cls.model_fields and isinstance(value, dict):
                    value[shared] = merge(data[shared] or {}, value[shared]) if shared in value else data[shared]
        out[name] = validate(cls, value, file=path, prefix=name)
    return {name: out[name] for name in data}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def explain(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Rows of (key path, type, default, description) for every field, recursing into nested configs."""
    rows = []
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        nested = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if field.is_required():
            default = "(required)"
        elif field.default_factory is not None:
            default = "(computed)" if nested else repr(field.default_factory())
        else:
            default = repr(field.default)
        rows.append((key, nested.__name__ if nested else _type_name(ann), default, field.description or ""))
        if nested:
            rows.extend(explain(nested, prefix=key + "."))
    return rows
