"""`ServeConfig`: what `agentkd serve` loads and where it listens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentkd.core.config import StrictConfig
from agentkd.models.config import LocalBatchConfig


class ServeConfig(StrictConfig):
    """An OpenAI-compatible server for a local model."""

    model: str = Field(default="embedded:smollm2-135m", description="Local model spec: embedded:NAME, local:PATH or a path.")
    adapter: str | None = Field(default=None, description="LoRA adapter folder applied on top of the model.")
    served_name: str | None = Field(default=None, description="Model id clients use (default: the model spec).")
    host: str = Field(default="127.0.0.1", description="Bind address; loopback by default, set 0.0.0.0 to expose.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0 picks a free one).")
    device: str = Field(default="auto", description="cpu, cuda, cuda:N or auto.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(default="auto", description="Weights dtype.")
    max_tokens_limit: int = Field(default=4096, ge=1, description="Largest max_tokens a request may ask for.")
    max_n: int = Field(default=16, ge=1, description="Largest n a request may ask for.")
    batch: LocalBatchConfig = Field(default_factory=LocalBatchConfig,
                                    description="How the model batches concurrent requests (e.g. --set serve.batch.threads=0).")
