"""The canonical data model: `Task`, `Step`, `Trajectory` and its `Provenance`.

Every stage reads and writes these. They are plain pydantic models, JSON-serialisable, versioned by
`SCHEMA_VERSION`; conversion to and from OpenAI chat messages lives in `agentkd.core.messages`.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1

Answer = Union[str, int, float, list[str], None]
Domain = Literal["factual", "math", "other"]
Status = Literal["ok", "error", "max_steps", "running"]
Role = Literal["system", "user", "assistant"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class Task(_Model):
    """One problem to solve."""

    id: str = Field(description="Stable identifier, unique within its source.")
    question: str = Field(description="The problem statement shown to the agent.")
    answer: Answer = Field(default=None, description="Gold answer (string, number or list of aliases).")
    domain: Domain = Field(default="factual", description="factual (retrieval QA) or math; selects prompts and scorer.")
    source: str | None = Field(default=None, description="Dataset / suite the task came from.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Any other fields of the source record.")

    @field_validator("id", mode="before")
    @classmethod
    def _id_to_str(cls, v: Any) -> str:
        return str(v)

    @property
    def key(self) -> str:
        """`source/id`, unique across sources."""
        return f"{self.source}/{self.id}" if self.source else self.id


class Step(_Model):
    """One turn of the agent: the model's output, the code it ran and what came back."""

    index: int = Field(description="0-based step number within the trajectory.")
    model_output: str = Field(description="Raw assistant text for this step (including any prefilled prefix).")
    thought: str | None = Field(default=None, description="Text after 'Thought:' and before the code.")
    code: str | None = Field(default=None, description="The code action that was executed, if any.")
    observation: str | None = Field(default=None, description="What was fed back to the model as 'Observation:'.")
    error: str | None = Field(default=None, description="Parse or execution error for this step, if any.")
    prefix: str | None = Field(default=None, description="First-thought prefix injected at the start of this step.")
    final_answer: Any = Field(default=None, description="Value passed to final_answer() in this step, if any.")
    is_final: bool = Field(default=False, description="True when this step called final_answer().")
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    extra: dict[str, Any] = Field(default_factory=dict, description="Stage-specific details (e.g. SAG candidates).")

    @property
    def prefix_injected(self) -> bool:
        return bool(self.prefix)


class Provenance(_Model):
    """Everything needed to trace a trajectory back to what produced it."""

    model: str | None = Field(default=None, description="Model name as requested (e.g. openai/gpt-4o, embedded:smollm2-135m).")
    provider: str | None = Field(default=None, description="Provider kind (litellm, local, scripted).")
    api_base: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict, description="temperature, top_p, max_tokens, stop, n...")
    seed: int | None = None
    sample_index: int = Field(default=0, description="Which of the k samples for this task.")
    prefix_text: str | None = Field(default=None, description="First-thought prefix used, if any.")
    prefix_mode: Literal["none", "prefill", "fallback"] = "none"
    prompt_id: str | None = Field(default=None, description="Prompt template name + content hash.")
    sandbox_backend: str | None = None
    tools: list[str] = Field(default_factory=list)
    tools_config_hash: str | None = None
    agentkd_version: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class Trajectory(_Model):
    """A whole episode: the task, the system/user prompt, the steps and the outcome."""

    schema_version: int = SCHEMA_VERSION
    task: Task
    system_prompt: str | None = Field(default=None, description="System message the agent saw.")
    user_prompt: str | None = Field(default=None, description="First user message (task + instructions).")
    steps: list[Step] = Field(default_factory=list)
    final_answer: Any = None
    status: Status = "running"
    status_reason: str | None = Field(default=None, description="Why the episode ended as it did.")
    provenance: Provenance = Field(default_factory=Provenance)
    scores: dict[str, float] = Field(default_factory=dict, description="Filled by curate/evaluate scorers.")

    @property
    def key(self) -> tuple[str, int]:
        """(task key, sample index): unique within a run; what resume skips on."""
        return (self.task.key, self.provenance.sample_index)

    @property
    def tokens_in(self) -> int:
        return sum(s.tokens_in for s in self.steps)

    @property
    def tokens_out(self) -> int:
        return sum(s.tokens_out for s in self.steps)

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.steps)

    def finish(self, status: Status, reason: str | None = None) -> Trajectory:
        self.status = status
        self.status_reason = reason
        self.provenance.finished_at = time.time()
        return self
