"""Chat models: one async interface, several providers, behaviour added by wrapping."""

from agentkd.models.base import ChatModel, Completion, ModelError, PrefillNotSupported, Usage, WrappedModel
from agentkd.models.config import ModelConfig, SamplingConfig

__all__ = [
    "ChatModel",
    "Completion",
    "ModelConfig",
    "ModelError",
    "PrefillNotSupported",
    "SamplingConfig",
    "Usage",
    "WrappedModel",
]
