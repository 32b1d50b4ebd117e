"""Agent tools: the tool protocol, the registry, `final_answer`, retrieval (`web_search`) and the
tool-result cache.

    from agentkd.tools import ToolsConfig, build_tools, render_tools, cache_stats

    tools = build_tools(ToolsConfig(search={"index": "indexes/wiki", "k": 3}, cache="runs/x/cache.sqlite"))
    tools["web_search"]("capital of France")   # -> "[1] Title (score s)\ntext\n\n[2] ..."
    render_tools(tools.values())                # python signatures + docstrings for the system prompt
    cache_stats(tools)                          # {"hits", "misses", "hit_rate", "per_tool"}

`search.index` is an index folder (`agentkd index build CORPUS --kind bm25|dense|hybrid --out DIR`) or a
corpus spec such as `embedded:wiki-vital` (a BM25 index is then built once into the cache); `search.url`
points at `agentkd index serve DIR` instead. Tools are plain callables (`tool(*args, **kwargs)`), which is
how the sandbox's tool bridge calls them; bad arguments raise `TypeError`, tool failures `ToolError`.

Importing this package is light: torch, faiss and bm25s are imported only when an index is built or searched.
"""

from agentkd.tools.base import Tool, ToolError, render_tools
from agentkd.tools.cache import CachedTool, ToolCache, cache_stats
from agentkd.tools.config import EncoderConfig, IndexConfig, SearchToolConfig, ToolsConfig
from agentkd.tools.final_answer import FinalAnswerTool
from agentkd.tools.registry import build_tools

__all__ = [
    "CachedTool",
    "EncoderConfig",
    "FinalAnswerTool",
    "IndexConfig",
    "SearchToolConfig",
    "Tool",
    "ToolCache",
    "ToolError",
    "ToolsConfig",
    "build_tools",
    "cache_stats",
    "render_tools",
]
