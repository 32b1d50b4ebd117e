"""OpenAI-compatible server for local models (`agentkd serve`)."""

from agentkd.serve.config import ServeConfig

__all__ = ["ServeConfig"]
