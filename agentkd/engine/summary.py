"""`RunSummary`: what a run did, printed by the CLI and stored as the run folder's `summary.json`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class RunSummary(BaseModel):
    out: str = Field(description="The run folder.")
    tasks: int = Field(description="Tasks in the task source.")
    samples_per_task: int
    skipped_already_done: int = Field(description="(task, sample) pairs stored by earlier runs, not run again.")
    stored: int = Field(description="Trajectories stored by this run.")
    failed_infra: int = Field(description="Episodes that ended in infrastructure failures (failed.jsonl; retried next run).")
    remaining: int = Field(description="Episodes not run (a budget or fatal stop).")
    statuses: dict[str, int] = Field(default_factory=dict, description="Episodes of this run by status.")
    total_stored: int = Field(description="Trajectories in the folder after this run.")
    retries: dict[str, int] = Field(default_factory=dict, description="Model-call retries by cause (429, 500, timeout, ...).")
    request_cache: dict[str, int] = Field(default_factory=dict, description="Request cache hits and misses.")
    tool_cache: dict[str, int] = Field(default_factory=dict, description="Tool-result cache hits and misses.")
    cost_usd_new: float = Field(description="What this run's new model calls cost.")
    cost_usd_total: float = Field(description="What all runs in this folder cost.")
    budget_usd: float | None = None
    stopped: Literal["budget", "fatal", "interrupted"] | None = Field(
        default=None, description="Why the run stopped before every episode ran.")
    error: str | None = Field(default=None, description="The error that stopped the run (stopped=fatal).")
    episodes_s: float = Field(description="Seconds until the last trajectory was stored.")
    wall_s: float = Field(description="Seconds until every sandbox was killed.")

    @property
    def retries_total(self) -> int:
        return sum(self.retries.values())

    @property
    def complete(self) -> bool:
        """Every (task, sample) of the task source is stored."""
        return self.total_stored == self.tasks * self.samples_per_task
