"""Agent tools: the tool protocol, the registry, `final_answer`, retrieval (`web_search`) and the
tool-result cache.

Importing this package is light: torch, faiss and bm25s are imported only when an index is built or searched.
"""

from agentkd.tools.base import Tool, ToolError, render_tools
from agentkd.tools.cache import CachedTool, ToolCache
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
    "render_tools",
]
