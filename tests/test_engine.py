"""The episode engine on its own: the driver (EpisodeRunner) with a worker written here, the run folder, and
the pool's start-ahead / delayed close that LocalEpisodes runs on (with real sandboxes)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from conftest import local_backend, wait_until

from agentkd.core.config import ConfigError
from agentkd.core.errors import PreflightError
from agentkd.core.types import Task, Trajectory
from agentkd.engine import EpisodeRunner, EpisodeSpec, EpisodeWorker, RunFolder, RunSummary
from agentkd.models.base import FatalModelError
from agentkd.models.budget import BudgetExceeded

TASKS = [Task(id=f"t{i}", question=f"q{i}", source="unit") for i in range(6)]


class Worker:
    """Runs an episode by awaiting `behave(spec)`; counts what it started and what was cancelled."""

    def __init__(self, behave, spent=0.0):
        self.behave = behave
        self.started: list[tuple[str, int]] = []
        self.cancelled: list[tuple[str, int]] = []
        self.spent = spent
        self.closed = False
        self.fail_start: Exception | None = None

    async def start(self):
        if self.fail_start:
            raise self.fail_start

    async def run(self, spec):
        self.started.append(spec.key)
        try:
            return await self.behave(spec)
        except asyncio.CancelledError:
            self.cancelled.append(spec.key)
            raise

    def counters(self):
        return {"retries": {"429": 1}, "request_cache": {"hits": 0, "misses": 1}, "tool_cache": {},
                "spent_usd": self.spent, "spent_before_usd": 0.0}

    async def close(self, *, wait=False):
        self.closed = True


def ok(spec: EpisodeSpec) -> Trajectory:
    t = Trajectory(task=spec.task)
    t.provenance.sample_index, t.provenance.seed = spec.sample, spec.seed
    t.final_answer = spec.task.question
    return t.finish("ok")


def run(folder: RunFolder, worker, samples=1, **kw) -> RunSummary:
    runner = EpisodeRunner(folder, worker, progress=False, **kw)
    return asyncio.run(runner.run(folder.todo(TASKS, samples=samples, seed=10), tasks=len(TASKS), samples=samples))


def test_worker_protocol_and_specs(tmp_path):
    assert isinstance(Worker(None), EpisodeWorker)
    folder = RunFolder(tmp_path)
    specs = folder.todo(TASKS[:2], samples=2, seed=10)
    assert [(s.key, s.seed) for s in specs] == [(("unit/t0", 0), 10), (("unit/t0", 1), 11),
                                                (("unit/t1", 0), 10), (("unit/t1", 1), 11)]
    with pytest.raises(ConfigError, match="duplicate task id 'unit/t0'"):
        folder.todo([TASKS[0], TASKS[0]], samples=1, seed=0)


def test_stores_resumes_by_key_and_writes_a_typed_summary(tmp_path):
    async def behave(spec):
        if spec.task.id == "t3" and spec.sample == 1:
            raise RuntimeError("sandbox broke")
        return ok(spec)

    folder = RunFolder(tmp_path / "run")
    s = run(folder, Worker(behave), samples=2, concurrency=3)
    assert (s.stored, s.failed_infra, s.total_stored, s.remaining) == (11, 1, 11, 0)
    assert s.statuses == {"ok": 11, "error": 1} and s.retries == {"429": 1} and not s.complete
    assert RunSummary.model_validate_json(folder.summary_path.read_text()) == s
    [failed] = [json.loads(line) for line in folder.failed.read_text().splitlines()]
    assert failed["status_reason"] == "RuntimeError: sandbox broke" and failed["provenance"]["sample_index"] == 1
    # a second run does only the missing (task, sample)
    w = Worker(lambda spec: asyncio.sleep(0, ok(spec)))
    s2 = run(folder, w, samples=2)
    assert w.started == [("unit/t3", 1)] and s2.skipped_already_done == 11 and s2.complete


def test_concurrency_is_bounded(tmp_path):
    active, peak = 0, 0

    async def behave(spec):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return ok(spec)

    s = run(RunFolder(tmp_path), Worker(behave), concurrency=2)
    assert s.stored == 6 and peak == 2


def test_a_fatal_error_stops_the_run_at_once(tmp_path):
    async def behave(spec):
        if spec.task.id == "t1":
            await asyncio.sleep(0.05)
            raise FatalModelError("openai/x (litellm): authentication failed (401): set OPENAI_API_KEY", status=401)
        if spec.task.id == "t0":
            return ok(spec)
        await asyncio.Event().wait()  # never set: only a cancellation ends these
        raise AssertionError("unreachable")

    folder = RunFolder(tmp_path)
    w = Worker(behave)
    t0 = time.monotonic()
    with pytest.raises(FatalModelError, match="authentication failed"):
        run(folder, w, concurrency=3)
    assert time.monotonic() - t0 < 5
    # the episodes in flight were cancelled, none started after the error, what finished before it is kept
    assert w.started == [("unit/t0", 0), ("unit/t1", 0), ("unit/t2", 0), ("unit/t3", 0)]
    assert w.cancelled == [("unit/t2", 0), ("unit/t3", 0)] and w.closed
    s = folder.read_summary()
    assert s.stopped == "fatal" and "authentication failed" in s.error and s.stored == 1 and s.remaining == 5
    assert folder.finished_keys() == {("unit/t0", 0)}


def test_pre_flight_failure_writes_nothing(tmp_path):
    folder = RunFolder(tmp_path / "run")
    w = Worker(None)
    w.fail_start = PreflightError("collect.teacher: http://127.0.0.1:9/v1 refuses connections")
    with pytest.raises(PreflightError):
        run(folder, w)
    assert not folder.trajectories.exists() and not folder.failed.exists() and w.started == [] and w.closed


def test_budget_stops_new_episodes(tmp_path):
    w = Worker(None)

    async def behave(spec):
        w.spent += 1.0
        if spec.task.id == "t4":
            raise BudgetExceeded("budget spent")
        return ok(spec)

    w.behave = behave
    s = run(RunFolder(tmp_path), w, concurrency=1, budget_usd=2.5)
    # the driver starts no episode once the spend passed the budget (3 ran: 1, 2, then 3 > 2.5)
    assert s.stopped == "budget" and s.stored == 3 and s.remaining == 3 and len(w.started) == 3
    # and a worker's BudgetExceeded mid-episode stops it too
    w2 = Worker(None)
    w2.behave = behave
    s = run(RunFolder(tmp_path / "b"), w2, concurrency=1)
    assert s.stopped == "budget" and s.stored == 4 and len(w2.started) == 5


@pytest.mark.parametrize("isolation", ["container", "process"])
def test_pool_starts_ahead_and_closes_later(isolation):
    from agentkd.sandbox import SandboxConfig, SandboxPool

    backend = local_backend()
    if backend is None:
        pytest.skip("no isolating local sandbox backend (forkserver, bwrap, unshare) works here")
    pool = SandboxPool(SandboxConfig(backend=backend, episode_isolation=isolation), warm=0)
    try:
        ahead = [pool.acquire_ahead() for _ in range(3)]  # returns at once; the sandboxes boot meanwhile

        async def use():
            return await asyncio.gather(*(sb.arun("import os; print(os.getpid())") for sb in ahead))

        results = asyncio.run(use())
        assert all(r.ok and r.stdout.strip() for r in results) and ahead[0].backend == backend
        # released: closed a moment later, not at once
        t0 = time.monotonic()
        pool.release(ahead[0], delay_s=0.3)
        assert wait_until(lambda: not ahead[0].sandbox.started, 5)
        assert time.monotonic() - t0 >= 0.29
        # released but not closed yet when the pool closes: killed by close(wait=False)
        pool.release(ahead[1], delay_s=60)
        pool.close(wait=False)
        assert wait_until(lambda: not ahead[1].sandbox.started, 10)
    finally:
        pool.close()
