"""`EvalConfig`: a student (or teacher) on held-out benchmarks (recipe section `evaluate`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agentkd.agent.config import AgentConfig, SagConfig
from agentkd.core.config import StrictConfig
from agentkd.core.tasks import TaskSource
from agentkd.models.config import ModelConfig
from agentkd.models.wrappers import ClientConfig
from agentkd.sandbox.config import SandboxConfig
from agentkd.tools.config import ToolsConfig

Method = Literal["agent", "cot", "cot_rag"]


def _student_agent() -> AgentConfig:
    return AgentConfig(prompt="codeact_student", sag=SagConfig(n=8))


class BaselineConfig(StrictConfig):
    """The no-agent rows of a report: CoT (no tools) and CoT+RAG (retrieve once, then answer)."""

    prompt: str = Field(default="cot", description="Prompt of both baselines (a name in agentkd/agent/prompts or a path).")
    max_tokens: int = Field(default=4096, ge=16, description="New-token limit of the CoT answer (greedy).")
    rag_k: int = Field(default=5, ge=1, description="CoT+RAG: passages retrieved for the question (once).")


class EvalConfig(StrictConfig):
    """Benchmarks × seeds → trajectories, scores, results.json, report.md, plots and a manifest in OUT/."""

    benchmarks: list[TaskSource] = Field(
        default_factory=lambda: [TaskSource(suite="quickstart-test")],
        description="Held-out task sets, one report row each (suite, file or HF dataset; `limit` keeps a slice).")
    student: ModelConfig = Field(
        default_factory=lambda: ModelConfig(model="embedded:smollm2-135m"),
        description="The model evaluated (a student with `adapter`, or the teacher for the teacher row).")
    client: ClientConfig = Field(default_factory=ClientConfig, description="Concurrency, rate limits, retries, budget.")
    agent: AgentConfig = Field(default_factory=_student_agent,
                               description="Episode loop: the short student prompt and SAG (agent.sag.n=1 turns it off).")
    tools: ToolsConfig = Field(default_factory=ToolsConfig, description="Tools callable from the agent's code.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="Where the agent's code runs.")
    methods: list[Method] = Field(default_factory=lambda: ["agent"], description="What is evaluated: agent "
                                  "(CodeAct with the tools), cot, cot_rag (baselines; cot_rag needs tools.search).")
    baselines: BaselineConfig = Field(default_factory=BaselineConfig, description="CoT / CoT+RAG settings.")
    seeds: int = Field(default=1, ge=1, description="Runs per task (seed, seed+1, ...): mean ± sd across them.")
    seed: int = Field(default=0, description="Base seed; also the bootstrap's seed.")
    judge: ModelConfig | None = Field(default=None, description="LLM judge for factual suites (cached and budgeted "
                                      "like any call); None: exact match decides.")
    bootstrap_resamples: int = Field(default=10000, ge=100, description="Bootstrap resamples for each 95% CI.")
    concurrency: int = Field(default=16, ge=1, description="Episodes in flight at once.")
    out: str | None = Field(default=None, description="Run folder (default: runs/<recipe name>).")

    @model_validator(mode="after")
    def _rag_has_search(self) -> EvalConfig:
        if "cot_rag" in self.methods and self.tools.search is None:
            raise ValueError("methods has cot_rag but tools.search is not set")
        return self
