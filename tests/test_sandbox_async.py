"""`Sandbox.arun` (the exchange on the event loop, no thread per run) and `SandboxPool.close(wait=False)`
(kill now, clean up in the background), against the real default local backend."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import killed, local_backend, procs_with, wait_until

from agentkd.sandbox import Sandbox, SandboxConfig, SandboxError, SandboxPool

BACKEND = local_backend()
pytestmark = pytest.mark.skipif(BACKEND is None, reason="needs an isolating local backend (forkserver, bwrap or "
                                "unshare); none works here")


def lookup(key: str) -> dict:
    time.sleep(0.05)  # a blocking host tool: must not stall the event loop
    return {"key": key}


def refuse(x: int) -> int:
    raise KeyError(f"no entry {x}")


def make(**kw) -> Sandbox:
    kw.setdefault("backend", BACKEND)
    kw.setdefault("timeout_s", 2)
    kw.setdefault("hard_timeout_grace_s", 0.5)
    return Sandbox(SandboxConfig(**kw), tools={"lookup": lookup, "refuse": refuse})


async def test_arun_state_tools_and_errors():
    with make() as sb:
        r = await sb.arun("x = 20\nprint('hi')\nx + 1")
        assert (r.stdout, r.value, r.error) == ("hi\n", "21", None)
        r = await sb.arun("lookup('k')['key'] * x")
        assert r.value == repr("k" * 20)
        r = await sb.arun("try:\n    refuse(3)\nexcept KeyError as e:\n    print('caught', e)")
        assert r.stdout == "caught 'no entry 3'\n"
        r = await sb.arun("final_answer(x * 2)")
        assert r.is_final and r.final_answer == 40
        assert sb.run("x").value == "20"  # the same worker serves sync and async calls


async def test_arun_sends_messages_larger_than_the_socket_buffer():
    """A message that does not fit the socket in one non-blocking send is finished on the loop, whole."""
    with make() as sb:
        big = "ab" * 2_000_000  # 4 MB of code: far more than one send() takes
        r = await sb.arun(f"s = {big!r}\nprint(len(s), s[:3], s[-3:])")
        assert (r.stdout, r.error) == ("4000000 aba bab\n", None)
        r = await sb.arun("echo = lookup('x' * 3_000_000)['key']\nlen(echo)")  # a big tool answer too
        assert r.value == "3000000"
        assert sb.run("len(s)").value == "4000000"  # the sync path works on the same, now non-blocking, socket


async def test_arun_keeps_the_event_loop_free_while_tools_and_code_run():
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    with make() as sb:
        t = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        r = await sb.arun("import time\ntime.sleep(0.3)\n[lookup(str(i))['key'] for i in range(3)]")
        elapsed = time.perf_counter() - t0
        t.cancel()
        assert r.value == "['0', '1', '2']" and elapsed >= 0.45
        assert ticks >= 30  # a blocked loop would have ticked about once


async def test_arun_soft_and_hard_timeouts_and_worker_death():
    with make() as sb:
        await sb.arun("kept = 5")
        r = await sb.arun("while True:\n    pass", timeout_s=0.3)
        assert r.timed_out and not r.restarted
        assert (await sb.arun("kept")).value == "5"  # soft timeout: state survives
        r = await sb.arun("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
                          timeout_s=0.3)
        assert r.timed_out and r.restarted and "restarted" in r.error
        r = await sb.arun("kept")
        assert r.error and "NameError" in r.error
        r = await sb.arun("import os\nos.kill(os.getpid(), 9)")
        assert r.restarted and r.error.startswith("WorkerDied")
        assert (await sb.arun("1 + 1")).value == "2"


async def test_many_concurrent_aruns_on_one_loop():
    boxes = [make() for _ in range(8)]
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda b: b.start(), boxes))
    try:
        results = await asyncio.gather(*(b.arun(f"v = {i}\nimport time\ntime.sleep(0.1)\nv * v")
                                         for i, b in enumerate(boxes)))
        assert [r.value for r in results] == [str(i * i) for i in range(8)]
    finally:
        for b in boxes:
            b.close()


async def test_sync_call_from_the_loop_thread_during_an_arun_is_refused():
    with make() as sb:
        sb.start()
        task = asyncio.create_task(sb.arun("import time\ntime.sleep(0.3)\n'done'"))
        await asyncio.sleep(0.1)
        with pytest.raises(SandboxError, match="arun"):
            sb.run("1")  # would interleave with the pending exchange on the same channel
        assert (await task).value == "'done'"
        assert sb.run("2").value == "2"


async def test_arun_from_another_thread_waits_for_the_lock():
    with make() as sb:
        sb.start()
        loop = asyncio.get_running_loop()
        busy = loop.run_in_executor(None, sb.run, "import time\ntime.sleep(0.3)\nx = 1")
        await asyncio.sleep(0.05)
        r = await sb.arun("x + 1")  # queued behind the thread's run, not interleaved with it
        assert (await busy).error is None and r.value == "2"


@pytest.mark.parametrize("mode", ["container", "process"])
def test_pool_close_without_waiting_kills_everything_at_once(mode):
    marker = f"agentkd-bg-{uuid.uuid4().hex[:8]}"
    pool = SandboxPool(SandboxConfig(backend=BACKEND, episode_isolation=mode, timeout_s=5), warm=1)
    boxes = [pool.acquire() for _ in range(3)]
    for sb in boxes:
        sb.run(f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', "
               f"'{marker}'], start_new_session=True)")
    assert wait_until(lambda: len(procs_with(marker)) == 3)
    sockdirs = [Path(d) for d in {getattr(sb, "_sockdir", None) for sb in boxes} if d]
    pids = procs_with(marker)
    t0 = time.perf_counter()
    pool.close(wait=False)
    returned = time.perf_counter() - t0
    # SIGKILL was sent to every process before close returned (the clean-up thread had no time to do it)
    assert all(killed(pid) for pid in pids), [Path(f"/proc/{p}/status").read_text() for p in pids if not killed(p)]
    assert wait_until(lambda: procs_with(marker) == [], timeout=2.0)
    assert returned < 0.5
    with pytest.raises(SandboxError, match="closed"):
        pool.acquire()
    # the background clean-up removes what the sandboxes left on the host
    assert wait_until(lambda: not any(d.exists() for d in sockdirs), timeout=10.0)


def test_launch_returns_at_once_and_start_picks_the_worker_up():
    boxes = [make() for _ in range(6)]
    t0 = time.perf_counter()
    for sb in boxes:
        sb.launch()
        assert not sb.started
    launched = time.perf_counter() - t0
    try:
        for i, sb in enumerate(boxes):
            sb.start()
            assert sb.started and sb.start_time_s is not None
            assert sb.run(f"{i} * 2").value == str(i * 2)
        # six workers booted in parallel: launching them took less than starting them one by one would
        assert launched < sum(sb.start_time_s for sb in boxes)
    finally:
        for sb in boxes:
            sb.close()


async def test_arun_on_a_launched_sandbox_waits_for_its_worker():
    with make() as sb:  # __enter__ starts it: close and relaunch to test the launched state
        sb.close()
        sb.launch()
        assert not sb.started
        r = await sb.arun("print('up')")
        assert r.stdout == "up\n" and sb.started


def test_closing_a_launched_sandbox_leaves_nothing_behind():
    marker = f"agentkd-launch-{uuid.uuid4().hex[:8]}"
    sb = make()
    sb.launch()
    pid, sockdir = sb._impl.proc.pid, Path(sb._sockdir)
    assert sockdir.is_dir()
    sb.close()  # never started: its worker must still be killed and its folders removed
    assert not sockdir.exists()
    assert wait_until(lambda: not Path(f"/proc/{pid}").exists() or killed(pid))
    pool = SandboxPool(SandboxConfig(backend=BACKEND, episode_isolation="container"), warm=0)
    try:
        ep = pool.acquire(wait=False)
        assert not ep.started
        ep.start()
        assert ep.run(f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; "
                      f"time.sleep(60)', '{marker}'], start_new_session=True)\n1").value == "1"
        assert wait_until(lambda: len(procs_with(marker)) == 1)
        ep.close()
        assert wait_until(lambda: procs_with(marker) == [])
    finally:
        pool.close()


def test_a_sandbox_that_cannot_boot_fails_at_start_not_at_launch(tmp_path):
    bad = tmp_path / "not-python"
    bad.write_text("#!/bin/sh\nexit 3\n")
    bad.chmod(0o755)
    sb = Sandbox(SandboxConfig(backend=BACKEND, python=str(bad), start_timeout_s=5))
    try:
        try:
            sb.launch()
        except SandboxError:
            return  # a backend that checks the interpreter up front: fine too
        with pytest.raises(SandboxError):
            sb.start()
    finally:
        sb.close()


async def test_a_cancelled_arun_never_hands_its_answer_to_the_next_run():
    with make() as sb:
        await sb.arun("x = 1")
        task = asyncio.create_task(sb.arun("import time\ntime.sleep(0.3)\n'late answer'"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.4)  # the cancelled run's answer would be waiting by now
        r = await sb.arun("'fresh'")
        assert r.value == "'fresh'" and r.restarted  # a new worker: the old one's state is gone, and said so
        assert "NameError" in (await sb.arun("x")).error


def test_socket_folders_of_killed_processes_are_swept_and_live_ones_kept():
    import subprocess
    import sys
    import tempfile

    from agentkd.sandbox.sandbox import sweep_stale_sockdirs

    child = ("import time; from agentkd.sandbox import Sandbox, SandboxConfig; "
             f"s = Sandbox(SandboxConfig(backend={BACKEND!r})); s.start(); print(s._sockdir, flush=True); "
             "time.sleep(600)")
    dead, live = (subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
                  for _ in range(2))
    try:
        dead_dir, live_dir = Path(dead.stdout.readline().strip()), Path(live.stdout.readline().strip())
        assert dead_dir.parent == live_dir.parent == Path(tempfile.gettempdir())
        assert dead_dir.name.startswith(f"agentkd-sb-{dead.pid}-") and dead_dir.is_dir() and live_dir.is_dir()
        dead.kill()  # SIGKILL: no chance to remove its socket folder
        dead.wait()
        assert dead_dir.is_dir()
        assert sweep_stale_sockdirs() >= 1
        assert not dead_dir.exists() and live_dir.is_dir()  # the live one's owner still runs
    finally:
        for p in (dead, live):
            p.kill()
            p.wait()
        sweep_stale_sockdirs()
