"""Prompt templates: YAML data files rendered with Jinja2.

The shipped prompts are package data (`agentkd/agent/prompts/*.yaml`, read with importlib.resources); a
recipe may name one of them or give a path to its own `.yaml`.

A prompt's text parts (`system`, `user`, ...) are Jinja2 templates. A prompt may also have `shots`: few-shot
examples as chat turns (`- {role: user|assistant, content: ...}`), which the episode loop sends between the
system message and the task. A small model copies a worked exchange in real turns far better than examples
written inside the system message (SmolLM2-135M on `What is A * B + C?`, one action sampled at T=0.7, issue
16: 0 of 16 right with two arithmetic examples and one search in the system text, 7 of 32 with the same
three as turns, 25 of 32 with a third arithmetic turn). Shots are the
teacher's only: a trajectory records the system and user prompt, and a student is trained and evaluated
with its own prompt.
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
def _read(name: str) -> dict[str, Any]:
    """The prompt file's YAML, read once (its text parts and its shots come from it)."""
    ref = Path(name) if name.endswith((".yaml", ".yml")) else shipped_prompts().get(name)
    if ref is None or not ref.is_file():
        known = ", ".join(sorted(shipped_prompts()))
        raise ConfigError(f"unknown prompt {name!r} (known: {known}, or a .yaml path)", path="agent.prompt")
    with resources.as_file(ref) as path:
        return load_yaml(path)


@functools.lru_cache(maxsize=64)
def load_prompt(name: str) -> dict[str, str]:
    return {k: v for k, v in _read(name).items() if isinstance(v, str)}


@functools.lru_cache(maxsize=64)
def load_shots(name: str) -> tuple[tuple[str, str], ...]:
    """The prompt's few-shot turns as (role, content template) pairs; () when it has none."""
    out = []
    for i, turn in enumerate(_read(name).get("shots") or []):
        if not (isinstance(turn, dict) and turn.get("role") in ("user", "assistant")
                and isinstance(turn.get("content"), str)):
            raise ConfigError(f"prompt {name!r}: shots[{i}] must be {{role: user|assistant, content: text}}",
                              path="agent.prompt")
        out.append((turn["role"], turn["content"]))
    return tuple(out)


@functools.lru_cache(maxsize=64)
def _shot_templates(name: str) -> tuple[tuple[str, Any], ...]:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return tuple((role, env.from_string(text)) for role, text in load_shots(name))


def render_shots(name: str, **values: Any) -> list[dict[str, str]]:
    """The few-shot turns as chat messages, each rendered with the prompt's values (compiled once)."""
    return [{"role": role, "content": t.render(**values).strip()} for role, t in _shot_templates(name)]


@functools.lru_cache(maxsize=64)
def prompt_id(name: str) -> str:
    """`name@hash` of the template text (few-shot turns included), recorded in provenance."""
    shots = load_shots(name)
    data = {**load_prompt(name), "shots": [list(t) for t in shots]} if shots else load_prompt(name)
    return f"{Path(name).stem}@{stable_hash(data, length=8)}"


@functools.lru_cache(maxsize=64)
def _template(name: str, part: str) -> Any:
    import jinja2

    text = load_prompt(name).get(part)
    if text is None:
        raise ConfigError(f"prompt {name!r} has no {part!r} part", path="agent.prompt")
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text)


def render(name: str, part: str, **values: Any) -> str:
    return _template(name, part).render(**values).strip()
