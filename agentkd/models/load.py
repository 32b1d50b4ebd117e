"""Resolve a model spec or `ModelConfig` to a `ChatModel`.

    embedded:smollm2-135m      the packaged SmolLM2 (prepared into the cache on first use)
    local:/path/to/folder      an HF folder or a .gguf file (an existing path works without the prefix)
    openai/NAME + api_base     an OpenAI-compatible server (vLLM, agentkd serve) via the stock openai client
    openai/gpt-4o-mini         anything else goes to litellm (any provider/model, optional api_base)
"""

from __future__ import annotations

from pathlib import Path

from agentkd.models.base import ChatModel
from agentkd.models.config import ModelConfig


def local_path_for(spec: str, *, progress: bool = True) -> Path | None:
    """The folder/file behind a local or embedded spec, or None for API models."""
    if spec.startswith("embedded:"):
        from agentkd.models.embedded import prepare_embedded

        return prepare_embedded(spec.split(":", 1)[1], progress=progress)
    if spec.startswith("local:"):
        return Path(spec.split(":", 1)[1]).expanduser()
    if "/" in spec and Path(spec).expanduser().exists():
        return Path(spec).expanduser()
    return None


def load_model(config: ModelConfig | str, *, progress: bool = True) -> ChatModel:
    cfg = ModelConfig(model=config) if isinstance(config, str) else config
    path = None if cfg.api_base else local_path_for(cfg.model, progress=progress)
    if path is not None:
        from agentkd.models.local import TransformersModel

        return TransformersModel(path, name=cfg.model, adapter=cfg.adapter, device=cfg.device, dtype=cfg.dtype,
                                 batch=cfg.batch)
    if cfg.api_base and cfg.model.startswith("openai/"):
        import os

        from agentkd.models.openai_compat import OpenAICompatModel

        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        return OpenAICompatModel(cfg.model, api_base=cfg.api_base, api_key=key, timeout_s=cfg.timeout_s,
                                 prefill=cfg.prefill, api_key_env=cfg.api_key_env)
    from agentkd.models.api import LiteLLMModel

    return LiteLLMModel(cfg.model, api_base=cfg.api_base, api_key_env=cfg.api_key_env, timeout_s=cfg.timeout_s,
                        prefill=cfg.prefill)
