"""`ScoreConfig` (recipe section `score`) and `JudgeConfig`: which scorer, and which LLM judge if any."""

from __future__ import annotations

from pydantic import Field

from agentkd.core.config import StrictConfig
from agentkd.models.config import ModelConfig
from agentkd.models.wrappers import ClientConfig


class JudgeConfig(StrictConfig):
    """An LLM judge for factual answers: any chat model, through agentkd's cached, budgeted, retried client."""

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(model="openai/gpt-4o-mini"),
                               description="The judge model (the paper's: openai/gpt-4o-mini).")
    client: ClientConfig = Field(default_factory=ClientConfig, description="Concurrency, retries, prices, budget "
                                 "for judge calls (cached in RUN/judge_cache.sqlite).")
    prompt: str | None = Field(default=None, description="Judge prompt YAML (system, user, retry); None: agentkd's "
                               "own (agentkd/score/prompts/judge.yaml).")
    attempts: int = Field(default=3, ge=1, description="Tries per answer when the judge's reply cannot be read; "
                          "after the last the answer is left unjudged (not wrong).")
    max_tokens: int = Field(default=256, ge=16, description="Longest judge reply.")


class ScoreConfig(StrictConfig):
    """How `agentkd score` scores a run (RUN/scores.jsonl beside RUN/trajectories.jsonl)."""

    scorer: str | None = Field(default=None, description="Scorer for every trajectory (qa_em_f1, math_equiv, "
                               "by_domain); None: the one each task's suite names, else by_domain.")
    judge: JudgeConfig | None = Field(default=None, description="LLM judge for factual answers; None: no judge.")
