"""Core types, storage and configuration shared by every stage (depends on pydantic and yaml only)."""

from agentkd.core.config import ConfigError, load_config, load_recipe
from agentkd.core.jsonl import JsonlStore, iter_jsonl, read_models
from agentkd.core.messages import from_chat_record, to_chat_record, to_messages
from agentkd.core.types import Provenance, Step, Task, Trajectory

__all__ = [
    "ConfigError",
    "JsonlStore",
    "Provenance",
    "Step",
    "Task",
    "Trajectory",
    "from_chat_record",
    "iter_jsonl",
    "load_config",
    "load_recipe",
    "read_models",
    "to_chat_record",
    "to_messages",
]
