"""`EvalConfig`: a student (or teacher) on held-out benchmarks (recipe section `evaluate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agentkd.agent.config import AgentConfig, SagConfig
from agentkd.core.config import StrictConfig
from agentkd.core.tasks import TaskSource
from agentkd.models.config import ModelConfig
from agentkd.models.wrappers import ClientConfig
from agentkd.sandbox.config import SandboxConfig
from agentkd.score.config import JudgeConfig
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
    judge: JudgeConfig | None = Field(default=None, description="LLM judge for factual suites (the paper's metric; "
                                      "cached in OUT/METHOD/judge_cache.sqlite and budgeted); None: exact match decides.")
    bootstrap_resamples: int = Field(default=10000, ge=100, description="Bootstrap resamples for each 95% CI.")
    concurrency: int = Field(default=16, ge=1, description="Episodes in flight at once.")
    out: str | None = Field(default=None, description="Run folder (default: runs/<recipe name>).")

    @model_validator(mode="after")
    def _rag_has_search(self) -> EvalConfig:
        if "cot_rag" in self.methods and self.tools.search is None:
            raise ValueError("methods: cot_rag needs tools.search (the retriever it asks once per question)")
        return self


def from_recipe(recipe: str | Path, overrides: list[str] | None = None, *, model: str | None = None,
                adapter: str | None = None, suites: list[str] | None = None, limit: int | None = None,
                seeds: int | None = None, sag: int | None = None, judge: str | None = None,
                methods: list[str] | None = None, out: str | Path | None = None) -> tuple[EvalConfig, Path]:
    """The `evaluate` section of a recipe with `--set` overrides and the CLI's shortcut flags applied (each flag
    is an override of the key it names, so errors name that key); returns (config, run folder)."""
    import json as _json

    from agentkd.core.config import ConfigError, load_recipe

    sets = list(overrides or [])
    if model is not None:
        sets.append(f"evaluate.student.model={_json.dumps(model)}")
    if adapter is not None:
        sets.append(f"evaluate.student.adapter={_json.dumps(adapter)}")
    if suites:
        sets.append("evaluate.benchmarks=" + _json.dumps([{"suite": s} for s in suites]))
    if seeds is not None:
        sets.append(f"evaluate.seeds={seeds}")
    if sag is not None:
        sets.append(f"evaluate.agent.sag.n={sag}")
    if judge is not None:
        sets.append(f"evaluate.judge.model.model={_json.dumps(judge)}")
    if methods:
        sets.append("evaluate.methods=" + _json.dumps(methods))
    configs = load_recipe(recipe, sets)
    if "evaluate" not in configs:
        raise ConfigError("recipe has no `evaluate:` section", file=recipe)
    cfg = configs["evaluate"]
    assert isinstance(cfg, EvalConfig)
    if limit is not None:
        cfg = cfg.model_copy(update={"benchmarks": [b.model_copy(update={"limit": limit}) for b in cfg.benchmarks]})
    out_dir = Path(out) if out else Path(cfg.out or Path("runs") / Path(recipe).stem)
    return cfg, out_dir
