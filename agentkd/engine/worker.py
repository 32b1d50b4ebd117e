"""`EpisodeSpec` (the unit of work) and `EpisodeWorker` (whatever runs it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agentkd.core.types import Task, Trajectory


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode: sample `sample` of `task`, with `seed`. Running it twice under the same resolved config
    gives the same trajectory (with a request cache, for free), so a lost episode can simply be run again."""

    task: Task
    sample: int
    seed: int

    @property
    def key(self) -> tuple[str, int]:
        """The stored trajectory's `Trajectory.key`."""
        return (self.task.key, self.sample)


@runtime_checkable
class EpisodeWorker(Protocol):
    """Runs episodes; the driver (`EpisodeRunner`) decides which, and stores what comes back.

    `run` returns the trajectory (status ok / max_steps, or error for an infrastructure failure the worker
    caught) or raises: `BudgetExceeded` (the driver stops starting episodes), an `AgentkdError` such as
    `FatalModelError` (the driver stops the run at once), anything else (the driver records an error
    trajectory for this episode)."""

    async def start(self) -> None:
        """Pre-flight checks and set-up, before the first episode."""
        ...

    async def run(self, spec: EpisodeSpec) -> Trajectory: ...

    def counters(self) -> dict[str, Any]:
        """Live counters for the progress bar and the summary: `retries` (by cause), `request_cache` and
        `tool_cache` (hits/misses), `spent_usd` and `spent_before_usd`."""
        ...

    async def close(self, *, wait: bool = False) -> None:
        """Stop: no episode's code runs after this returns (clean-up may finish in the background)."""
        ...
