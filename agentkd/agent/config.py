"""`AgentConfig`: the CodeAct episode loop's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentkd.core.config import StrictConfig


class AgentConfig(StrictConfig):
    """How one episode runs: prompts, step limit, stop sequences, observation format."""

    prompt: str = Field(default="codeact_teacher", description="System/user prompt: a name in agentkd/agent/prompts or a YAML path.")
    max_steps: int = Field(default=5, ge=1, description="Code actions before the agent is asked for its final answer.")
    stop: list[str] = Field(default_factory=lambda: ["<end_code>", "\nObservation:"],
                            description="Stop sequences for each action.")
    end_code: str = Field(default="<end_code>", description="Marker appended to a logged action that stopped on it.")
    max_observation_chars: int = Field(default=4000, ge=100, description="Observations longer than this are cut (with a marker).")
    final_step_prompt: str = Field(default="final_step", description="Prompt asking for an answer after max_steps.")
    ftp: bool = Field(default=False, description="First-thought prefix: prefill the first Thought with the first paragraph of a CoT answer.")
    ftp_prompt: str = Field(default="cot", description="Prompt of the FTP first pass (plain chain of thought).")
    ftp_max_tokens: int = Field(default=1024, ge=16, description="Token limit of the FTP first pass.")
    ftp_mode: Literal["auto", "prefill", "fallback"] = Field(
        default="auto",
        description="How the prefix is injected: prefill (assistant prefill; vLLM, agentkd serve, Anthropic), "
        "fallback (ask the model to start its first Thought with it), auto (prefill where supported).",
    )
    code_timeout_s: float | None = Field(default=None, gt=0, description="Per-action time limit (None: the sandbox's).")
