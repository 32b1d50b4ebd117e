"""`ModelConfig`: which model to call and how to sample from it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentkd.core.config import StrictConfig


class SamplingConfig(StrictConfig):
    """Default sampling parameters for a model (callers may override per call)."""

    temperature: float = Field(default=0.0, ge=0.0, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(default=1024, ge=1, description="Maximum new tokens per completion.")
    seed: int | None = Field(default=None, description="Base seed (per-sample seeds derive from it).")


class LocalBatchConfig(StrictConfig):
    """How a local model batches concurrent requests into one batch of rows decoded together."""

    max_sequences: int = Field(default=16, ge=1, description="Most rows (samples) in one batch.")
    max_tokens: int = Field(
        default=65536, ge=1,
        description="Most padded tokens in one batch: rows x (longest prompt + largest max_tokens); bounds the "
        "KV cache (a single longer request still runs, alone).",
    )
    window_ms: float = Field(
        default=5.0, ge=0.0,
        description="How long a request that finds the model idle waits for others to join its batch.",
    )
    share_prefix: int = Field(
        default=16, ge=0,
        description="Rows of a batch sharing at least this many leading prompt tokens prefill them once (0: off).",
    )
    attention: Literal["auto", "shared_prefix", "plain"] = Field(
        default="auto",
        description="shared_prefix: the batch's common prefix is kept once and attended by all rows (cascade "
        "attention; models with full causal attention only); plain: a transformers cache holding the prefix once "
        "per row; auto: shared_prefix where the model supports it.",
    )
    threads: int = Field(
        default=1, ge=0,
        description="CPU only: torch threads while a batch runs (0: torch's own count, i.e. the cores). On a "
        "2-vCPU VM shared with other jobs, 2 threads made batches 3-9x slower than 1 (each op waits at an OpenMP "
        "barrier for a descheduled thread); an idle machine with many cores may prefill faster on more.",
    )


class ModelConfig(StrictConfig):
    """A chat model: an API model through litellm, an OpenAI-compatible server, or a local model."""

    model: str = Field(
        default="embedded:smollm2-135m",
        description="litellm model string (openai/gpt-4o-mini, anthropic/claude-...), 'local:PATH' (HF folder or "
        ".gguf file), or 'embedded:smollm2-135m'.",
    )
    api_base: str | None = Field(default=None, description="OpenAI-compatible server URL (vLLM, agentkd serve).")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the API key.")
    adapter: str | None = Field(default=None, description="LoRA adapter folder for local models.")
    device: str = Field(default="auto", description="Local models: cpu, cuda, cuda:N, or auto.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(default="auto", description="Local models' dtype.")
    prefill: Literal["auto", "yes", "no"] = Field(
        default="auto", description="Whether the endpoint accepts assistant prefill (auto: decide by provider)."
    )
    timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout for API models.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Default sampling parameters.")
    batch: LocalBatchConfig = Field(default_factory=LocalBatchConfig,
                                    description="Local models: batching of concurrent requests.")
