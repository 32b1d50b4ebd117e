"""Prompt templates: YAML data files rendered with Jinja2.

The shipped prompts are package data (`agentkd/agent/prompts/*.yaml`, read with importlib.resources); a
recipe may name one of them or give a path to its own `.yaml`.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError, load_yaml
from agentkd.core.hashing import stable_hash


def shipped_prompts() -> dict[str, Any]:
    """name -> Traversable of each prompt that ships with agentkd."""
    folder = resources.files("agentkd.agent").joinpath("prompts")
    return {f.name[: -len(".yaml")]: f for f in folder.iterdir() if f.name.endswith(".yaml")}


@functools.lru_cache(maxsize=64)
def load_prompt(name: str) -> dict[str, str]:
    ref = Path(name) if name.endswith((".yaml", ".yml")) else shipped_prompts().get(name)
    if ref is None or not ref.is_file():
        known = ", ".join(sorted(shipped_prompts()))
        raise ConfigError(f"unknown prompt {name!r} (known: {known}, or a .yaml path)", path="agent.prompt")
    with resources.as_file(ref) as path:
        data = load_yaml(path)
    return {k: v for k, v in data.items() if isinstance(v, str)}


@functools.lru_cache(maxsize=64)
def prompt_id(name: str) -> str:
    """`name@hash` of the template text, recorded in provenance."""
    return f"{Path(name).stem}@{stable_hash(load_prompt(name), length=8)}"


@functools.lru_cache(maxsize=64)
def _template(name: str, part: str) -> Any:
    import jinja2

    text = load_prompt(name).get(part)
    if text is None:
        raise ConfigError(f"prompt {name!r} has no {part!r} part", path="agent.prompt")
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text)


def render(name: str, part: str, **values: Any) -> str:
    return _template(name, part).render(**values).strip()
