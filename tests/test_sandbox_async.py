"""`Sandbox.arun` (the exchange on the event loop, no thread per run) and `SandboxPool.close(wait=False)`
(kill now, clean up in the background), against the real default local backend."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import threading
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


def make(tools: dict | None = None, **kw) -> Sandbox:
    kw.setdefault("backend", BACKEND)
    kw.setdefault("timeout_s", 2)
    kw.setdefault("hard_timeout_grace_s", 0.5)
    return Sandbox(SandboxConfig(**kw), tools={"lookup": lookup, "refuse": refuse, **(tools or {})})


class Gate:
    """A host tool that holds the run calling it until the test opens it: `entered` tells it is held."""

    def __init__(self):
        self.entered, self.opened = threading.Event(), threading.Event()

    def __call__(self) -> str:
        self.entered.set()
        assert self.opened.wait(30), "the test never opened the gate"
        return "open"

    async def held(self) -> None:
        assert await asyncio.get_running_loop().run_in_executor(None, self.entered.wait, 30)


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
    gate = Gate()
    with make(tools={"gate": gate}) as sb:
        task = asyncio.create_task(sb.arun("gate()\n'done'"))
        await gate.held()  # the arun's exchange is pending (its code waits in a host tool)
        with pytest.raises(SandboxError, match="arun"):
            sb.run("1")  # would interleave with the pending exchange on the same channel
        gate.opened.set()
        assert (await task).value == "'done'"
        assert sb.run("2").value == "2"


async def test_arun_from_another_thread_waits_for_the_lock():
    gate = Gate()
    with make(tools={"gate": gate}) as sb:
        loop = asyncio.get_running_loop()
        busy = loop.run_in_executor(None, sb.run, "gate()\nx = 1")
        await gate.held()  # the thread's run holds the sandbox
        queued = asyncio.ensure_future(sb.arun("x + 1"))
        done, _ = await asyncio.wait({queued}, timeout=0.2)
        assert not done  # queued behind the thread's run, not interleaved with it
        gate.opened.set()
        r = await queued
        assert (await busy).error is None and r.value == "2"


@pytest.mark.parametrize("mode", ["container", "process"])
def test_pool_close_without_waiting_kills_everything_at_once(mode, monkeypatch):
    marker = f"agentkd-bg-{uuid.uuid4().hex[:8]}"
    pool = SandboxPool(SandboxConfig(backend=BACKEND, episode_isolation=mode, timeout_s=5), warm=1)
    boxes = [pool.acquire() for _ in range(3)]
    for sb in boxes:
        sb.run(f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', "
               f"'{marker}'], start_new_session=True)")
    assert wait_until(lambda: len(procs_with(marker)) == 3)
    sockdirs = [Path(d) for d in {getattr(sb, "_sockdir", None) for sb in boxes} if d] or \
        [Path(b.listener.getsockname()).parent for b in pool._boxes]
    assert sockdirs and all(d.is_dir() for d in sockdirs)
    pids = procs_with(marker)
    # hold the background clean-up back: close(wait=False) must return without it
    cleanup_may_run, finish = threading.Event(), SandboxPool._finish_close

    def held_finish(boxes, sandboxes):
        cleanup_may_run.wait(60)
        finish(boxes, sandboxes)

    monkeypatch.setattr(SandboxPool, "_finish_close", staticmethod(held_finish))
    closer = threading.Thread(target=pool.close, kwargs={"wait": False})
    closer.start()
    closer.join(30)
    try:
        assert not closer.is_alive(), "close(wait=False) waited for the clean-up"
        # SIGKILL was sent to every process before close returned (the clean-up thread is held)
        assert all(killed(pid) for pid in pids), [Path(f"/proc/{p}/status").read_text() for p in pids if not killed(p)]
        assert wait_until(lambda: procs_with(marker) == [])
        assert all(d.is_dir() for d in sockdirs)  # the clean-up has not run
        with pytest.raises(SandboxError, match="closed"):
            pool.acquire()
    finally:
        cleanup_may_run.set()
    # the background clean-up removes what the sandboxes left on the host
    assert wait_until(lambda: not any(d.exists() for d in sockdirs), timeout=30.0)


def test_launch_returns_at_once_and_start_picks_the_worker_up():
    boxes = [make() for _ in range(6)]
    try:
        for sb in boxes:
            sb.launch()
            assert not sb.started
        # each worker boots by itself, in parallel: all six connect to their sockets before any start() is called
        # (how much time that saves is measured by tools/bench/sandbox.py)
        assert wait_until(lambda: all(select.select([sb._listener], [], [], 0)[0] for sb in boxes), timeout=60)
        for i, sb in enumerate(boxes):
            sb.start()
            assert sb.started and sb.start_time_s is not None
            assert sb.run(f"{i} * 2").value == str(i * 2)
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


def test_a_sandbox_that_cannot_boot_fails_at_start_not_at_launch(monkeypatch):
    # a worker that dies while it boots (here: a cfg its kernel cannot parse), on any backend
    from agentkd.sandbox import sandbox as sandbox_module

    real = sandbox_module.worker_cfg
    monkeypatch.setattr(sandbox_module, "worker_cfg", lambda config, tools: {**real(config, tools),
                                                                             "max_output": "not-a-number"})
    sb = make(start_timeout_s=20)
    try:
        sb.launch()  # returns at once: it does not wait for the worker, so it cannot know yet
        assert not sb.started
        with pytest.raises(SandboxError, match=r"(?s)exited before its worker connected.*not-a-number"):
            sb.start()
        assert not sb.started
    finally:
        sb.close()


async def test_a_cancelled_arun_never_hands_its_answer_to_the_next_run():
    with make() as sb:
        await sb.arun("x = 1")
        # a second handle on the worker's connection, open past the cancel: it tells when the late answer came
        spy = socket.socket(fileno=os.dup(sb._main.sock.fileno()))
        try:
            task = asyncio.create_task(sb.arun("import time\ntime.sleep(0.3)\n'late answer'"))
            while not sb._async_busy:  # the task runs until it waits for the answer: the run was sent by then
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            loop = asyncio.get_running_loop()
            assert (await loop.run_in_executor(None, select.select, [spy], [], [], 30))[0]  # the answer is there
            r = await sb.arun("'fresh'")
            assert r.value == "'fresh'" and r.restarted  # a new worker: the old one's state is gone, and said so
            assert "NameError" in (await sb.arun("x")).error
        finally:
            spy.close()


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
