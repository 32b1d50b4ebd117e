"""Sandboxes started ahead and closed a moment after use: what `SandboxPool.acquire_ahead` and
`SandboxPool.release` run on.

An episode asks for its sandbox before its first teacher call and needs it only when the first action
comes back: `AheadSandbox` starts it in the background meanwhile. One thread launches the sandboxes of all
episodes in order (fast: the workers boot in parallel, in their own processes) and another picks each up
once it has connected; more threads only fight the event loop for the GIL.

Episodes often end together (their calls started together): `DelayedCloser` closes their sandboxes a moment
later, on one thread, keeping that burst of process teardown off the CPU while the other episodes' last
steps still run.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

from agentkd.sandbox.result import ExecResult

log = logging.getLogger(__name__)


class AheadSandbox:
    """A sandbox that is being started in the background; `arun` waits for it. A `CodeExecutor`."""

    def __init__(self, acquire: Any, backend: str, launcher: ThreadPoolExecutor, completer: ThreadPoolExecutor):
        self._backend = backend
        self.sandbox: Any = None  # the pool's sandbox, once launched
        self._ready: Future = Future()
        launcher.submit(acquire).add_done_callback(lambda f: self._then(f, completer))

    def _then(self, launched: Future, completer: ThreadPoolExecutor) -> None:
        if launched.cancelled():  # the pool closed before this one was launched
            from agentkd.sandbox.sandbox import SandboxError

            self._ready.set_exception(SandboxError("the sandbox pool is closed"))
            return
        if launched.exception() is not None:
            self._ready.set_exception(launched.exception())
            return
        self.sandbox = sandbox = launched.result()

        def started(f: Future) -> None:
            if f.exception() is not None:
                self._ready.set_exception(f.exception())
            else:
                self._ready.set_result(sandbox)

        try:
            completer.submit(sandbox.start).add_done_callback(started)
        except RuntimeError as e:  # the pool is closed (its threads shut down)
            self._ready.set_exception(e)

    @property
    def backend(self) -> str:
        return self._backend

    async def arun(self, code: str, timeout_s: float | None = None, *, executor: Executor | None = None) -> ExecResult:
        import asyncio

        # ready long before the first action, as a rule: then no hop through the loop's wake-up pipe
        sandbox = self._ready.result() if self._ready.done() else await asyncio.wrap_future(self._ready)
        return await sandbox.arun(code, timeout_s, executor=executor)

    async def arun_candidates(self, codes: list[str], timeout_s: float | None = None, *,
                              executor: Executor | None = None) -> list[ExecResult]:
        """`Sandbox.run_candidates` (SAG: each code on its own fork of the state), once the sandbox is up."""
        import asyncio

        sandbox = self._ready.result() if self._ready.done() else await asyncio.wrap_future(self._ready)
        return await sandbox.arun_candidates(codes, timeout_s, executor=executor)

    def commit(self, result: ExecResult) -> None:
        """`Sandbox.commit`: adopt one candidate of the last `arun_candidates`."""
        self._ready.result().commit(result)

    def close(self) -> None:
        try:
            self._ready.result()
        except Exception:
            pass
        if self.sandbox is not None:
            self.sandbox.close()


class DelayedCloser:
    """Closes sandboxes `delay_s` after they were handed in, one at a time, on one thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sandbox-close")
        self._thread.start()

    def close_later(self, sandbox: Any, delay_s: float) -> None:
        with self._cv:
            if self._stopped:
                raise RuntimeError("the closer is stopped")
            heapq.heappush(self._heap, (time.monotonic() + delay_s, next(self._order), sandbox))
            self._cv.notify()

    def stop(self) -> list[Any]:
        """Stop; the sandboxes not closed yet are returned (the caller kills and closes them)."""
        with self._cv:
            self._stopped = True
            left = [sb for _, _, sb in self._heap]
            self._heap.clear()
            self._cv.notify()
        return left

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                if self._stopped:
                    return
                _, _, sandbox = heapq.heappop(self._heap)
            try:
                sandbox.close()
            except Exception as e:  # one sandbox that cannot be closed must not stop the others' closes
                log.warning("closing an episode's sandbox failed: %s", e)
