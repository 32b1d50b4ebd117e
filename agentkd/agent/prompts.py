"""Prompt templates: YAML data files rendered with Jinja2 (`agentkd/agent/prompts/*.yaml`)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError, load_yaml
from agentkd.core.hashing import stable_hash

PROMPT_DIR = Path(__file__).parent / "prompts"


@functools.lru_cache(maxsize=64)
def load_prompt(name: str) -> dict[str, str]:
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROMPT_DIR / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PROMPT_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown prompt {name!r} (known: {known}, or a .yaml path)", path="agent.prompt")
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
