"""The collection runner.

    summary = collect(CollectConfig(...), "runs/hotpot-gpt4o")

Writes `config.yaml`, `trajectories.jsonl` (one line per finished (task, sample)), `failed.jsonl`
(episodes that ended in infrastructure errors: kept for inspection, retried on the next run, never
stored as answers), `cache.sqlite` (every teacher request and response) and `summary.json`.

Rerunning the same command resumes: finished (task, sample) pairs are skipped and interrupted episodes
replay their cached calls for free. A `budget_usd` stop ends the run cleanly (exit code 3 from the CLI);
raise the budget and rerun to continue. What no retry can fix (credentials, unknown model, bad request,
an api_base that does not answer) is found by a pre-flight check or at the first call, and stops the run
at once with a `FatalModelError` / `PreflightError` (exit code 4).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from agentkd.collect.config import CollectConfig
from agentkd.core.config import ConfigError
from agentkd.core.jsonl import JsonlStore, iter_jsonl
from agentkd.core.tasks import load_tasks
from agentkd.core.types import Provenance, Task, Trajectory

log = logging.getLogger(__name__)
_CLOSE_DELAY_S = 0.1
_YamlDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when built with it: same output, ~5x faster


def finished_keys(path: Path) -> set[tuple[str, int]]:
    """(task key, sample index) of every stored trajectory (streamed; torn lines skipped)."""
    keys = set()
    for obj in iter_jsonl(path):
        task = obj.get("task", {})
        key = f"{task['source']}/{task['id']}" if task.get("source") else task.get("id")
        keys.add((key, obj.get("provenance", {}).get("sample_index", 0)))
    return keys


class _Prestarted:
    """An episode's sandbox, started ahead while the first teacher call is in flight; `arun` waits for it.

    One thread launches the sandboxes of all episodes in order (fast: the workers boot in parallel, in
    their own processes) and another picks each up once it has connected."""

    def __init__(self, pool: Any, launcher: ThreadPoolExecutor, completer: ThreadPoolExecutor):
        self.pool = pool
        self._launched: Any = None
        self._ready: Future = Future()
        launcher.submit(pool.acquire, False).add_done_callback(lambda f: self._then(f, completer))

    def _then(self, launched: Future, completer: ThreadPoolExecutor) -> None:
        if launched.exception() is not None:
            self._ready.set_exception(launched.exception())
            return
        self._launched = sandbox = launched.result()

        def started(f: Future) -> None:
            if f.exception() is not None:
                self._ready.set_exception(f.exception())
            else:
                self._ready.set_result(sandbox)

        try:
            completer.submit(sandbox.start).add_done_callback(started)
        except RuntimeError as e:  # the run is over (executor shut down)
            self._ready.set_exception(e)

    @property
    def backend(self) -> str:
        return self.pool.backend

    def run(self, code: str, timeout_s: float | None = None) -> Any:
        return self._ready.result().run(code, timeout_s=timeout_s)

    async def arun(self, code: str, timeout_s: float | None = None, *, executor: Any = None) -> Any:
        import asyncio

        # ready long before the first action, as a rule: then no hop through the loop's wake-up pipe
        sandbox = self._ready.result() if self._ready.done() else await asyncio.wrap_future(self._ready)
        if hasattr(sandbox, "arun"):
            return await sandbox.arun(code, timeout_s, executor=executor)
        return await asyncio.get_running_loop().run_in_executor(executor, sandbox.run, code, timeout_s)

    def close(self) -> None:
        try:
            self._ready.result()
        except Exception:
            pass
        if self._launched is not None:
            self._launched.close()


def _log_close_error(f: Any) -> None:
    if f.exception() is not None:
        log.warning("closing an episode's sandbox failed: %s", f.exception())


class _Progress:
    """A rich progress bar with done / failed / retries / cost / ETA (silent when disabled)."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled and total > 0
        self.total = total
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("collect"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.task = self.bar.add_task("collect", total=total, info="")
            self.bar.start()

    def update(self, done: int, info: str) -> None:
        if self.enabled:
            self.bar.update(self.task, completed=done, info=info)

    def close(self) -> None:
        if self.enabled:
            self.bar.stop()


async def collect_async(cfg: CollectConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    from agentkd.agent.loop import run_episode
    from agentkd.models.base import FatalModelError
    from agentkd.models.load import load_model
    from agentkd.models.preflight import preflight_model, preflight_tools
    from agentkd.models.wrappers import (
        BudgetedModel,
        BudgetExceeded,
        CachedModel,
        RequestCache,
        RetryingModel,
        wrap_model,
    )
    from agentkd.models.wrappers import find as find_wrapper
    from agentkd.sandbox import SandboxPool
    from agentkd.tools import build_tools
    from agentkd.tools.cache import cache_stats

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.dump({"collect": cfg.model_dump(mode="json")}, Dumper=_YamlDumper,
                                               sort_keys=False))
    tasks = load_tasks(cfg.tasks)
    seen: set[str] = set()
    for t in tasks:
        if t.key in seen:
            raise ConfigError(f"duplicate task id {t.key!r}: ids must be unique for resume to work", path="collect.tasks")
        seen.add(t.key)
    # failfast: what no retry can fix (credentials, an api_base that does not answer or serve the model, a
    # missing index) stops the run here, before any store is opened, sandbox started or request made
    preflight_model(cfg.teacher, key="collect.teacher")
    preflight_tools(cfg.tools, key="collect.tools")
    traj_path = out / "trajectories.jsonl"
    # appends are single write()s, safe against a killed process; fsync once at the end, not per line
    store = JsonlStore(traj_path, durable=False)
    failed = JsonlStore(out / "failed.jsonl")
    done = finished_keys(traj_path)
    todo: list[tuple[Task, int]] = [(t, s) for t in tasks for s in range(cfg.samples) if (t.key, s) not in done]
    skipped = len(tasks) * cfg.samples - len(todo)

    cache = RequestCache(out / "cache.sqlite")
    spent_before = cache.total_cost()
    provider = load_model(cfg.teacher, progress=progress)
    model = wrap_model(provider, cfg.client, cache)
    budget: BudgetedModel = find_wrapper(model, BudgetedModel)
    retry: RetryingModel = find_wrapper(model, RetryingModel)
    cached: CachedModel | None = find_wrapper(model, CachedModel)
    tools = build_tools(cfg.tools)
    sampling = cfg.teacher.sampling.model_dump(exclude={"seed"})
    executor = ThreadPoolExecutor(max_workers=cfg.concurrency + 2, thread_name_prefix="episode")
    # sandbox starts and closes get one thread each (launch, pick up, close): more threads only fight the
    # event loop for the GIL; in order, the earliest episodes (whose answers come back first) go first
    launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-launch")
    completer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-start")
    closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-close")
    # fresh per-episode sandboxes: forked from a warm template (cfg.sandbox.episode_isolation="process") or
    # one new sandbox each ("container"); see agentkd.sandbox
    pool = SandboxPool(cfg.sandbox, tools=tools, warm=0)  # episodes start their own sandbox ahead (_Prestarted)
    loop = asyncio.get_running_loop()
    statuses: Counter[str] = Counter()
    state = {"done": 0, "failed": 0, "budget_stop": False, "fatal": False}  # failfast: "fatal"
    sem = asyncio.Semaphore(cfg.concurrency)
    # episodes often end together (their calls started together): closing their sandboxes a moment later
    # keeps that burst of process teardown off the CPU while the other episodes' last steps still run
    closing: dict[Any, asyncio.TimerHandle] = {}

    def close_now(sandbox: Any) -> None:
        closing.pop(sandbox, None)
        closer.submit(sandbox.close).add_done_callback(_log_close_error)

    bar = _Progress(len(todo), progress)
    # Everything alive now (imported modules, configs, clients) lives as long as the run: keep it out of
    # the cyclic GC's full collections, each of which would otherwise rescan the whole heap and stall all
    # episodes at once (~50 ms per full collection on the 64-episode bench). Unfrozen when the run ends,
    # so nothing is kept alive for longer than without this.
    gc.freeze()
    t_start = time.perf_counter()

    def info() -> str:
        return (f"failed {state['failed']}  retries {retry.stats['retries']}  "
                f"${budget.spent_usd - spent_before:.4f} new")

    async def episode(task: Task, sample: int) -> None:
        async with sem:
            if state["budget_stop"] or state["fatal"]:  # failfast: `or state["fatal"]`
                return
            sandbox = None
            try:
                # the worker starts in the background while the first teacher call is in flight
                sandbox = _Prestarted(pool, launcher, completer)
                traj: Trajectory = await run_episode(task, model, sandbox, tools, cfg.agent, sampling=sampling,
                                                     seed=cfg.seed + sample, sample_index=sample, executor=executor)
            except BudgetExceeded:
                state["budget_stop"] = True
                return
            except FatalModelError:  # failfast: not an episode's failure; the run stops (below)
                state["fatal"] = True  # the episode waiting on `sem` must not start a call
                raise
            except Exception as e:  # sandbox/tool/infrastructure failure: keep it, retry it next run
                log.warning("episode %s sample %d failed: %s: %s", task.key, sample, type(e).__name__, e)
                traj = Trajectory(task=task, provenance=Provenance(sample_index=sample, seed=cfg.seed + sample))
                traj.finish("error", f"{type(e).__name__}: {e}")
            finally:
                if sandbox is not None:  # off the critical path: the trajectory does not wait for it
                    closing[sandbox] = loop.call_later(_CLOSE_DELAY_S, close_now, sandbox)
            traj.provenance.api_base = cfg.teacher.api_base
            statuses[traj.status] += 1
            if traj.status == "error":
                state["failed"] += 1
                await loop.run_in_executor(executor, failed.append, traj)
            else:
                state["done"] += 1
                store.append(traj)  # one non-durable write() of one line: cheaper inline than a thread hop
            bar.update(state["done"] + state["failed"], info())

    episodes = [asyncio.ensure_future(episode(t, s)) for t, s in todo]
    try:
        await asyncio.gather(*episodes)
    except FatalModelError:  # failfast: no new episode starts, those in flight are cancelled, then tear down
        for ep in episodes:
            ep.cancel()
        await asyncio.gather(*episodes, return_exceptions=True)
        await model.aclose()
        raise
    finally:
        gc.unfreeze()
        cache.flush()
        bar.close()
        store.close()
        failed.close()
        episodes_s = time.perf_counter() - t_start  # every episode finished and stored
        # every sandbox is killed before we return (no episode's code runs after this); waiting for their
        # processes to exit and removing their cgroups and folders goes on in a background thread (joined
        # at interpreter exit), as do episode closes still queued (made quick by the kill)
        pool.close(wait=False)
        for sandbox, handle in list(closing.items()):
            handle.cancel()
            close_now(sandbox)
        closer.shutdown(wait=False)
        launcher.shutdown(wait=False)
        completer.shutdown(wait=False)
        executor.shutdown(wait=False)
    wall = time.perf_counter() - t_start
    tool_stats = cache_stats(tools) or {}
    summary = {
        "out": str(out),
        "tasks": len(tasks),
        "samples_per_task": cfg.samples,
        "skipped_already_done": skipped,
        "stored": state["done"],
        "failed_infra": state["failed"],
        "remaining": len(todo) - state["done"] - state["failed"],
        "statuses": dict(statuses),
        "total_stored": len(finished_keys(traj_path)),
        "retries": dict(retry.stats),
        "request_cache": dict(cached.stats) if cached else {},
        "tool_cache": tool_stats,
        "cost_usd_new": round(budget.spent_usd - spent_before, 6),
        "cost_usd_total": round(budget.spent_usd, 6),
        "budget_usd": cfg.client.budget_usd,
        "stopped": "budget" if state["budget_stop"] else None,
        "episodes_s": round(episodes_s, 3),  # until the last trajectory was stored
        "wall_s": round(wall, 3),  # ... and every sandbox killed
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    await model.aclose()
    return summary


def collect(cfg: CollectConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a collection; returns the summary that is also written to summary.json."""
    return asyncio.run(collect_async(cfg, out_dir, progress=progress))
