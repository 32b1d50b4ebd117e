"""`EpisodeRunner`: the driver of a run. It alone decides which episodes start, owns the budget, and writes
the run folder; an `EpisodeWorker` runs the episodes.

- Bounded concurrency: at most `concurrency` episodes in flight, started in order.
- Budget: once the model budget is spent (`BudgetExceeded` from the worker, or the worker's spend past
  `budget_usd`), no new episode starts; the summary says `stopped: budget` (CLI exit code 3).
- An `AgentkdError` from the worker (e.g. `FatalModelError`: bad credentials, unknown model) stops the run at
  once: the episodes in flight are cancelled, everything stored so far stays, the summary says
  `stopped: fatal` with the error, and the error propagates (CLI exit code 4).
- Any other exception ends that episode only: an error trajectory goes to failed.jsonl (retried next run).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from agentkd.core.errors import AgentkdError
from agentkd.core.types import Provenance, Trajectory
from agentkd.engine.folder import RunFolder
from agentkd.engine.summary import RunSummary
from agentkd.engine.worker import EpisodeSpec, EpisodeWorker

log = logging.getLogger(__name__)


class _Progress:
    """A rich progress bar with done / failed / retries / cost / ETA (silent when disabled)."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.enabled = enabled and total > 0
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.task = self.bar.add_task(label, total=total, info="")
            self.bar.start()

    def update(self, done: int, info: str) -> None:
        if self.enabled:
            self.bar.update(self.task, completed=done, info=info)

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


class EpisodeRunner:
    def __init__(self, folder: RunFolder, worker: EpisodeWorker, *, concurrency: int = 16,
                 budget_usd: float | None = None, progress: bool = True, label: str = "run",
                 on_stored: Callable[[Trajectory], str | None] | None = None):
        """`on_stored(traj)` is called with each stored trajectory; what it returns (e.g. evaluation's
        running accuracy) is shown on the progress bar."""
        self.on_stored = on_stored
        self.folder = folder
        self.worker = worker
        self.concurrency = concurrency
        self.budget_usd = budget_usd
        self.progress = progress
        self.label = label

    async def run(self, todo: Sequence[EpisodeSpec], *, tasks: int, samples: int) -> RunSummary:
        """Run every spec in `todo` (what `RunFolder.todo` left of `tasks` × `samples`), store the
        trajectories, write and return the summary."""
        from agentkd.models.budget import BudgetExceeded

        worker, folder = self.worker, self.folder
        loop = asyncio.get_running_loop()
        statuses: Counter[str] = Counter()
        state: dict[str, Any] = {"done": 0, "failed": 0, "stop": None, "error": None, "note": ""}
        sem = asyncio.Semaphore(self.concurrency)
        episodes: list[asyncio.Task] = []
        t_start = time.perf_counter()
        episodes_s = 0.0
        bar = _Progress(self.label, len(todo), self.progress)

        def over_budget() -> bool:
            return self.budget_usd is not None and worker.counters()["spent_usd"] >= self.budget_usd

        def info() -> str:
            c = worker.counters()
            return (f"{state['note']}failed {state['failed']}  retries {sum(c['retries'].values())}  "
                    f"${c['spent_usd'] - c['spent_before_usd']:.4f} new")

        async def episode(spec: EpisodeSpec) -> None:
            async with sem:
                if state["stop"] or over_budget():
                    state["stop"] = state["stop"] or "budget"
                    return
                try:
                    traj = await worker.run(spec)
                except BudgetExceeded:
                    state["stop"] = state["stop"] or "budget"
                    return
                except AgentkdError as e:  # no retry can fix it: stop everything now
                    if state["stop"] != "fatal":
                        state["stop"], state["error"] = "fatal", e
                        for other in episodes:
                            if other is not asyncio.current_task():
                                other.cancel()
                    return
                except Exception as e:  # sandbox/tool/infrastructure failure: keep it, retry it next run
                    log.warning("episode %s sample %d failed: %s: %s", spec.task.key, spec.sample, type(e).__name__, e)
                    traj = Trajectory(task=spec.task, provenance=Provenance(sample_index=spec.sample, seed=spec.seed))
                    traj.finish("error", f"{type(e).__name__}: {e}")
                statuses[traj.status] += 1
                if traj.status == "error":
                    state["failed"] += 1
                    await loop.run_in_executor(None, folder.store, traj)  # fsynced: off the loop
                else:
                    state["done"] += 1
                    folder.store(traj)  # one non-durable write() of one line: cheaper inline than a thread hop
                    if self.on_stored is not None:
                        note = self.on_stored(traj)
                        state["note"] = f"{note}  " if note else ""
                if bar.enabled:
                    bar.update(state["done"] + state["failed"], info())

        # Everything alive now (imported modules, configs, clients) lives as long as the run: keep it out of
        # the cyclic GC's full collections, each of which would otherwise rescan the whole heap and stall all
        # episodes at once (~50 ms per full collection on the 64-episode bench). Unfrozen when the run ends,
        # so nothing is kept alive for longer than without this.
        gc.freeze()
        try:
            await worker.start()  # pre-flight first: nothing is written when it fails
            folder.open()
            episodes = [asyncio.ensure_future(episode(s)) for s in todo]
            results = await asyncio.gather(*episodes, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r
        except (KeyboardInterrupt, asyncio.CancelledError):
            state["stop"] = state["stop"] or "interrupted"
            raise
        except AgentkdError as e:  # from start(): pre-flight
            state["stop"], state["error"] = "fatal", e
        finally:
            gc.unfreeze()
            folder.close()
            bar.close()
            episodes_s = time.perf_counter() - t_start  # every episode finished and stored
            await worker.close(wait=False)  # every sandbox killed before we return
            summary = self._summary(state, statuses, todo, tasks, samples, episodes_s, t_start)
            folder.write_summary(summary)
        if state["error"] is not None:
            raise state["error"]
        return summary

    def _summary(self, state: dict[str, Any], statuses: Counter[str], todo: Sequence[EpisodeSpec], tasks: int,
                 samples: int, episodes_s: float, t_start: float) -> RunSummary:
        c = self.worker.counters()
        return RunSummary(
            out=str(self.folder.path), tasks=tasks, samples_per_task=samples,
            skipped_already_done=tasks * samples - len(todo), stored=state["done"], failed_infra=state["failed"],
            remaining=len(todo) - state["done"] - state["failed"], statuses=dict(statuses),
            total_stored=len(self.folder.finished_keys()), retries=dict(c["retries"]),
            request_cache=dict(c["request_cache"]), tool_cache=dict(c["tool_cache"]),
            cost_usd_new=round(c["spent_usd"] - c["spent_before_usd"], 6), cost_usd_total=round(c["spent_usd"], 6),
            budget_usd=self.budget_usd, stopped=state["stop"],
            error=str(state["error"]) if state["error"] is not None else None,
            episodes_s=round(episodes_s, 3), wall_s=round(time.perf_counter() - t_start, 3))
