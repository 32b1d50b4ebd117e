"""`agentkd serve`: an OpenAI-compatible server for local models."""

from __future__ import annotations


def serve() -> None:
    """Serve a local model (placeholder)."""
