"""`AgentConfig`: the CodeAct episode loop's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentkd.core.config import StrictConfig


class SagConfig(StrictConfig):
    """Self-consistent action generation (`agentkd.agent.sag`): N candidate actions per step, each run on its
    own fork of the sandbox state, majority vote by outcome. The defaults are the paper's."""

    n: int = Field(default=1, ge=1, description="Candidates per step; 1 turns SAG off (one greedy/sampled action).")
    temperature: float = Field(default=0.4, ge=0.0, description="Sampling temperature of the candidates.")
    top_p: float = Field(default=0.8, gt=0.0, le=1.0, description="Nucleus mass of the candidates.")
    requests: Literal["auto", "parallel"] = Field(
        default="auto", description="auto: one request with n (choices a backend did not return are drawn by "
        "parallel requests); parallel: n requests of one choice each, seeds seed..seed+n-1.")
    max_observation_chars: int = Field(default=1000, ge=0, description="Each candidate's observation is kept in "
                                       "the step's extra up to this many characters (for the viewer).")


class AgentConfig(StrictConfig):
    """How one episode runs: prompts, step limit, stop sequences, observation format."""

    prompt: str = Field(default="codeact_teacher", description="System/user prompt: a name in agentkd/agent/prompts or a YAML path.")
    max_steps: int = Field(default=5, ge=1, description="Code actions before the agent is asked for its final answer.")
    stop: list[str] = Field(default_factory=lambda: ["<end_code>", "\nObservation:"],
                            description="Stop sequences for each action.")
    prefill: str | None = Field(
        default=None, description="Text every action starts with (e.g. 'Thought:'), sent as an assistant prefill "
        "where the model supports it (agentkd serve, local models, vLLM) and left out where it does not; it stays "
        "in the logged action. With FTP the first action starts with 'Thought: ' + the prefix instead.")
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
    sag: SagConfig = Field(default_factory=SagConfig, description="Self-consistent action generation (n > 1 turns it on).")
