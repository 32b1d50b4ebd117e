"""Build the tool set an agent gets from a `ToolsConfig`."""

from __future__ import annotations

import importlib
from typing import Any

from agentkd.core.config import ConfigError
from agentkd.tools.base import Tool
from agentkd.tools.config import ToolsConfig
from agentkd.tools.final_answer import FinalAnswerTool


def _import_tool(spec: str) -> Tool:
    mod, sep, attr = spec.partition(":")
    if not sep:
        raise ConfigError(f"tool {spec!r} must look like 'module:ClassOrFactory'", path="tools.extra")
    try:
        obj: Any = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import tool {spec!r}: {e}", path="tools.extra") from None
    tool = obj() if callable(obj) and not isinstance(obj, Tool) else obj
    if not isinstance(tool, Tool):
        raise ConfigError(f"{spec!r} did not give a Tool (got {type(tool).__name__})", path="tools.extra")
    return tool


def build_tools(config: ToolsConfig | None = None) -> dict[str, Tool]:
    """name -> Tool. Always holds `final_answer`; results are cached when `config.cache` is set."""
    config = config or ToolsConfig()
    tools: list[Tool] = []
    if config.search is not None:
        from agentkd.tools.search import SearchTool

        tools.append(SearchTool(config.search))
    tools += [_import_tool(spec) for spec in config.extra]
    out: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in out or tool.name == "final_answer":
            raise ConfigError(f"two tools are named {tool.name!r}", path="tools")
        out[tool.name] = tool
    if config.cache:
        from agentkd.tools.cache import CachedTool, ToolCache

        cache = ToolCache.shared(config.cache)
        out = {name: CachedTool(tool, cache) for name, tool in out.items()}
    out["final_answer"] = FinalAnswerTool()  # a control-flow builtin in the sandbox: never cached
    return out
