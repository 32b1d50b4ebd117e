"""`Sandbox`: one episode's persistent, isolated Python worker, with host tools and forkable state."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agentkd.sandbox.backends import AUTO_ORDER, backend_class
from agentkd.sandbox.backends.base import Backend
from agentkd.sandbox.config import SandboxConfig, resolve_config
from agentkd.sandbox.isolation import host_spec, judge, summary
from agentkd.sandbox.protocol import Channel, ChannelClosed, accept_hello
from agentkd.sandbox.result import ExecResult
from agentkd.sandbox.worker import jsonable

log = logging.getLogger(__name__)


class SandboxError(RuntimeError):
    """The sandbox could not be started or was used wrongly (e.g. committing a stale candidate)."""


def choose_backend(config: SandboxConfig) -> tuple[type[Backend], dict[str, str]]:
    """The backend class `config.backend` resolves to, and why each skipped backend was skipped."""
    skipped: dict[str, str] = {}
    names = AUTO_ORDER if config.backend == "auto" else (config.backend,)
    for name in names:
        cls = backend_class(name)
        reason = cls.unavailable(config)
        if reason is None:
            return cls, skipped
        skipped[name] = reason
    detail = "; ".join(f"{k}: {v}" for k, v in skipped.items())
    raise SandboxError(f"no usable sandbox backend ({detail})")


_swept = False


def sweep_stale_sockdirs() -> int:
    """Remove the socket folders (`agentkd-sb-PID-*` in the temp folder) of agentkd processes that died without
    cleaning up (killed with SIGKILL, say). Returns how many were removed."""
    from agentkd.sandbox.cgroup import _alive

    removed = 0
    for d in Path(tempfile.gettempdir()).glob("agentkd-sb-*-*"):
        pid = d.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def worker_cfg(config: SandboxConfig, tools: Mapping[str, Any]) -> dict[str, Any]:
    """What every kernel is told: output cap, import policy and the host tools it calls back for. A
    `final_answer` tool marked `passthrough` (agentkd's own: it returns its argument) is left to the
    kernel's builtin, which ends the run without a round trip to the host."""
    names = [n for n, t in tools.items() if not (n == "final_answer" and getattr(t, "passthrough", False))]
    return {"max_output": config.max_output_bytes, "tools": sorted(names), "allowed_imports": config.allowed_imports}


def _cleanup(impl: Backend | None, listener: socket.socket | None, sockdir: str | None) -> None:
    if impl is not None:
        try:
            impl.kill()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass
    if listener is not None:
        listener.close()
    if sockdir:
        shutil.rmtree(sockdir, ignore_errors=True)


def _locked(method):
    """Serialise calls on one Sandbox (it is one worker: concurrent runs would interleave on its channel)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            if self._async_busy:  # only the thread running an `arun` can get here: the lock is re-entrant
                raise SandboxError(f"{method.__name__}() called while an arun() of this sandbox is waiting")
            return method(self, *args, **kwargs)

    return wrapper


class Sandbox:
    """A persistent worker per episode. See `agentkd.sandbox` for the API overview."""

    def __init__(self, config: SandboxConfig | None = None, tools: Mapping[str, Callable[..., Any]] | None = None,
                 **overrides: Any):
        self.config = config = resolve_config(config, overrides)
        self.tools = dict(tools or {})
        self.start_time_s: float | None = None  # seconds from launch to a connected worker (last start)
        self.restarts = 0
        self._lock = threading.RLock()
        self._tool_lock = threading.Lock()
        self._main_lock = threading.Lock()
        self._impl: Backend | None = None
        self._cls: type[Backend] | None = None
        self._main: Channel | None = None
        self._candidates: dict[int, Channel] = {}
        self._generation = 0
        self._async_busy = False  # an `arun` holds the lock across awaits on the loop's thread
        self._abandoned = False  # an `arun` was cancelled mid-exchange: restart before the next run
        self._launched_at: float | None = None  # launch() started a worker that start() has not picked up yet
        self._next_kid = 1
        self._listener: socket.socket | None = None
        self._sockdir: str | None = None
        self._token = ""
        self._finalizer: weakref.finalize | None = None
        self._probe_spec: dict | None = None  # what the worker's probe compares against (agentkd.sandbox.isolation)
        self._probe: dict | None = None  # what kernel 0's probe found, from its hello

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """Name of the backend in use (resolves `auto` without starting a worker)."""
        if self._cls is None:
            self._cls, skipped = choose_backend(self.config)
            for name, why in skipped.items():
                log.debug("sandbox backend %s skipped: %s", name, why)
        return self._cls.name

    def isolation(self) -> dict[str, bool | None]:
        """Which walls the worker found up, inside the sandbox (`agentkd.sandbox.isolation`): network, filesystem,
        pid, uid, seccomp, memory, work_dir, memory_cgroup, procs_cgroup; True up, False down, None unknown."""
        return summary(self.isolation_report())

    def isolation_report(self) -> dict[str, dict]:
        """`isolation()` with what was measured: {wall: {"ok": ..., "why": ..., facts}}."""
        self.start()
        main = self._main
        return judge(self._probe, self._probe_spec, main.peer if main is not None else None, self.config.work_dir_mb)

    @property
    def started(self) -> bool:
        """Whether the worker is up and connected (`launch()` alone does not wait for that)."""
        return self._main is not None

    @_locked
    def start(self) -> None:
        """Start the worker (if `launch()` did not already) and wait until it has connected."""
        if self._main is not None:
            return
        if self._launched_at is None:
            self.launch()
        assert self._launched_at is not None
        t0, self._launched_at = self._launched_at, None
        self._main = self._accept(time.monotonic() + self.config.start_timeout_s)
        self.start_time_s = time.perf_counter() - t0
        self._probe = self._main.hello.get("probe")

    @_locked
    def launch(self) -> None:
        """Start the worker without waiting for it to connect: it boots in the background, and `start()` (or
        the first run) picks it up. Lets one thread start many sandboxes that boot in parallel."""
        if self._main is not None or self._launched_at is not None:
            return
        self.backend  # noqa: B018 - resolves the backend class
        if self._listener is None:
            global _swept
            if not _swept:  # once per process
                _swept = True
                sweep_stale_sockdirs()
            self._sockdir = tempfile.mkdtemp(prefix=f"agentkd-sb-{os.getpid()}-")
            os.chmod(self._sockdir, 0o711)
            path = os.path.join(self._sockdir, "ctl.sock")
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(path)
            os.chmod(path, 0o666)
            self._listener.listen(128)
        assert self._cls is not None and self._sockdir is not None
        self._impl = self._cls(self.config, self._sockdir)
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _cleanup, self._impl, self._listener, self._sockdir)
        self._token = secrets.token_hex(16)
        t0 = time.perf_counter()
        cfg = worker_cfg(self.config, self.tools)
        cfg["probe"] = self._probe_spec = host_spec(self._sockdir)
        self._impl.start(cfg, self._token)
        self._launched_at = t0

    def _accept(self, deadline: float) -> Channel:
        assert self._impl is not None and self._listener is not None
        while True:
            try:
                return accept_hello(self._listener, self._token, min(deadline, time.monotonic() + 0.2))
            except TimeoutError:
                if not self._impl.alive():
                    why = self._impl.diagnostics().strip()
                    self._impl.kill()
                    raise SandboxError(f"the {self._impl.name} sandbox exited before its worker connected"
                                       + (f": {why}" if why else "")) from None
                if time.monotonic() >= deadline:
                    self._impl.kill()
                    raise SandboxError(f"the {self._impl.name} worker did not connect within "
                                       f"{self.config.start_timeout_s:g}s") from None

    @_locked
    def restart(self) -> None:
        """Kill the sandbox (every process in it) and start a fresh worker: all state is lost."""
        self._drop_candidates()
        if self._main is not None:
            self._main.close()
            self._main = None
        if self._impl is not None:
            self._impl.kill()
        self._launched_at = None
        self.restarts += 1
        self._generation += 1
        self.start()

    @_locked
    def close(self) -> None:
        """Kill the sandbox and everything it started; the object may be started again afterwards."""
        self._drop_candidates()
        if self._main is not None:
            self._main.close()
            self._main = None
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._impl = None
        self._launched_at = None
        self._listener = None
        self._sockdir = None

    def kill_now(self) -> None:
        """SIGKILL every process of the sandbox at once, without waiting (thread-safe; no lock): no code
        runs in it any more. `close()` still has to be called to wait for them and clean up."""
        impl = self._impl
        if impl is not None:
            impl.kill_now()

    # -- running code -------------------------------------------------------------------------------
    @_locked
    def run(self, code: str, timeout_s: float | None = None) -> ExecResult:
        """Run `code` in the persistent namespace. Never raises for problems in the code itself."""
        if self._abandoned:  # an arun was cancelled mid-exchange: its worker's state is no longer ours
            self._abandoned = False
            self.restart()
            result = self.run(code, timeout_s)
            result.restarted = True
            return result
        self.start()
        self._drop_candidates()
        assert self._main is not None
        soft = timeout_s or self.config.timeout_s
        t0 = time.perf_counter()
        try:
            msg = self._exchange(self._main, {"op": "run", "code": code, "soft": soft}, soft)
        except TimeoutError:
            self.restart()
            return self._hard_timeout_result(soft, t0)
        except ChannelClosed:
            why = self._death_reason()
            self.restart()
            return self._died_result(why, t0)
        return self._result(msg, time.perf_counter() - t0)

    async def arun(self, code: str, timeout_s: float | None = None, *, executor: Executor | None = None) -> ExecResult:
        """`run` for asyncio code: the exchange with a started worker happens on the event loop, so many
        concurrent episodes need no thread per run (and do not fight the loop for the GIL). Host tools,
        starts and restarts run in `executor` (default: the loop's). One `arun` at a time per sandbox."""
        import asyncio

        loop = asyncio.get_running_loop()
        if self._main is None or self._candidates or self._async_busy or not self._lock.acquire(blocking=False):
            return await loop.run_in_executor(executor, functools.partial(self.run, code, timeout_s))
        self._async_busy = True
        outcome, why = "", ""
        soft = timeout_s or self.config.timeout_s
        t0 = time.perf_counter()
        try:
            ch = self._main
            if ch is None or self._candidates:  # changed before we took the lock
                outcome = "thread"
            else:
                try:
                    msg = await self._aexchange(ch, {"op": "run", "code": code, "soft": soft}, soft, executor)
                    return self._result(msg, time.perf_counter() - t0)
                except TimeoutError:
                    outcome = "timeout"
                except ChannelClosed:
                    outcome, why = "died", self._death_reason()
                except asyncio.CancelledError:
                    # the worker may still answer this run: that answer must never be taken for the next
                    # run's. Drop the channel; the next run restarts the worker and reports the lost state.
                    ch.close()
                    self._main, self._abandoned = None, True
                    raise
        finally:
            self._async_busy = False
            self._lock.release()
        if outcome == "thread":
            return await loop.run_in_executor(executor, functools.partial(self.run, code, timeout_s))
        await loop.run_in_executor(executor, self.restart)
        return self._hard_timeout_result(soft, t0) if outcome == "timeout" else self._died_result(why, t0)

    def _hard_timeout_result(self, soft: float, t0: float) -> ExecResult:
        return ExecResult(timed_out=True, restarted=True, duration_s=time.perf_counter() - t0,
                          error=f"TimeoutError: the code ignored the soft time limit of {soft:g}s and was "
                          f"killed after {soft + self.config.hard_timeout_grace_s:g}s; the sandbox was "
                          "restarted and all variables were lost")

    @staticmethod
    def _died_result(why: str, t0: float) -> ExecResult:
        return ExecResult(restarted=True, duration_s=time.perf_counter() - t0,
                          error=f"WorkerDied: the sandbox worker died ({why}); it was restarted and all "
                          "variables were lost")

    @_locked
    def run_candidates(self, codes: Sequence[str], timeout_s: float | None = None) -> list[ExecResult]:
        """Run each code on its own copy of the current state, in parallel; the main state is unchanged.

        Pass one of the results to `commit` to adopt its state. Candidates live until the next `run`,
        `run_candidates`, `commit` or `close`. Host tools called by concurrent candidates run one at a time.
        """
        self.start()
        self._drop_candidates()
        assert self._main is not None
        codes = list(codes)
        if not codes:
            return []
        soft = timeout_s or self.config.timeout_s
        kids = self._new_kids(len(codes))
        self._generation += 1
        try:
            self._main.send({"op": "fork", "kids": kids})
            reply = self._main.recv(time.monotonic() + self.config.start_timeout_s)
            deadline = time.monotonic() + self.config.start_timeout_s
            chans = self._accept_candidates(kids[:len(reply.get("pids", []))], deadline)
        except (TimeoutError, ChannelClosed) as e:
            self.restart()
            return [ExecResult(restarted=True, error=f"SandboxError: forking candidates failed ({e}); the "
                               "sandbox was restarted and all variables were lost") for _ in codes]
        fork_error = reply.get("error")

        def one(kid: int, code: str) -> ExecResult:
            ch = chans.get(kid)
            if ch is None:
                return ExecResult(error=f"SandboxError: could not fork a candidate ({fork_error or 'unknown'})")
            t0 = time.perf_counter()
            try:
                msg = self._exchange(ch, {"op": "run", "code": code, "soft": soft}, soft)
            except TimeoutError:
                self._kill_pids([ch.pid])
                ch.close()
                chans.pop(kid, None)
                return ExecResult(timed_out=True, duration_s=time.perf_counter() - t0,
                                  error=f"TimeoutError: the candidate ignored the soft time limit of {soft:g}s "
                                  "and was killed (main state unchanged; this candidate cannot be committed)")
            except ChannelClosed:
                ch.close()
                chans.pop(kid, None)
                return ExecResult(duration_s=time.perf_counter() - t0,
                                  error="WorkerDied: the candidate's worker died (memory or process limit?); "
                                  "main state unchanged; this candidate cannot be committed")
            r = self._result(msg, time.perf_counter() - t0)
            r._candidate, r._generation = kid, self._generation
            return r

        with ThreadPoolExecutor(max_workers=min(len(codes), 16)) as pool:
            results = list(pool.map(one, kids, codes))
        self._candidates = chans
        return results

    async def arun_candidates(self, codes: Sequence[str], timeout_s: float | None = None, *,
                              executor: Executor | None = None) -> list[ExecResult]:
        """`run_candidates` for asyncio code (it runs in `executor`; the candidates run in parallel there)."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(
            executor, functools.partial(self.run_candidates, codes, timeout_s))

    @_locked
    def commit(self, result: ExecResult) -> None:
        """Adopt the state of a candidate returned by the last `run_candidates`."""
        kid = result._candidate
        if kid is None or result._generation != self._generation or kid not in self._candidates:
            raise SandboxError("commit() needs a result of the latest run_candidates() whose worker is alive")
        new = self._candidates.pop(kid)
        old, self._main = self._main, new
        if old is not None:
            try:
                old.send({"op": "exit"})
            except ChannelClosed:
                pass
            old.close()
        self._drop_candidates()
        self._generation += 1
        try:  # the candidate's private copy of the work dir becomes the work dir
            new.send({"op": "adopt"})
            new.recv(time.monotonic() + self.config.start_timeout_s)
        except (TimeoutError, ChannelClosed) as e:
            self.restart()
            raise SandboxError(f"the committed candidate did not take over the work dir ({e}); the sandbox "
                               "was restarted and all variables were lost") from None

    # -- internals ----------------------------------------------------------------------------------
    def _new_kids(self, n: int) -> list[int]:
        kids = list(range(self._next_kid, self._next_kid + n))
        self._next_kid += n
        return kids

    def _accept_candidates(self, kids: list[int], deadline: float) -> dict[int, Channel]:
        chans: dict[int, Channel] = {}
        for _ in kids:
            ch = accept_hello(self._listener, self._token, deadline)  # type: ignore[arg-type]
            chans[ch.kid] = ch
        return chans

    def _exchange(self, ch: Channel, msg: dict, soft: float) -> dict:
        deadline = time.monotonic() + soft + self.config.hard_timeout_grace_s
        ch.send(msg)
        while True:
            reply = ch.recv(deadline)
            op = reply.get("op")
            if op == "result":
                return reply
            if op == "call":
                t = time.monotonic()
                ch.send(self._call_tool(reply))
                deadline += time.monotonic() - t  # host tool time does not count towards the hard limit

    async def _aexchange(self, ch: Channel, msg: dict, soft: float, executor: Executor | None) -> dict:
        import asyncio

        deadline = time.monotonic() + soft + self.config.hard_timeout_grace_s
        await ch.asend(msg)
        while True:
            reply = await ch.arecv(deadline)
            op = reply.get("op")
            if op == "result":
                return reply
            if op == "call":  # host tools may block (a retrieval server, the web): a thread of their own
                t = time.monotonic()
                answer = await asyncio.get_running_loop().run_in_executor(executor, self._call_tool, reply)
                await ch.asend(answer)
                deadline += time.monotonic() - t

    def _call_tool(self, msg: dict) -> dict:
        name = msg.get("name")
        fn = self.tools.get(name) if isinstance(name, str) else None
        if fn is None:
            return {"op": "raise", "type": "NameError", "message": f"no host tool named {name!r}"}
        try:
            with self._tool_lock:
                value = fn(*msg.get("args", []), **msg.get("kwargs", {}))
            return {"op": "return", "value": jsonable(value)}
        except Exception as e:
            return {"op": "raise", "type": type(e).__name__, "message": str(e), "args": jsonable(list(e.args))}

    def _result(self, msg: dict, duration: float) -> ExecResult:
        return ExecResult(stdout=msg.get("stdout", ""), stderr=msg.get("stderr", ""), error=msg.get("error"),
                          value=msg.get("value"), timed_out=bool(msg.get("timed_out")),
                          truncated=bool(msg.get("truncated")), duration_s=duration,
                          is_final=bool(msg.get("is_final")), final_answer=msg.get("final_answer"))

    def _death_reason(self) -> str:
        impl = self._impl
        oom = getattr(impl, "oom_killed", None)
        if callable(oom) and oom():
            return f"out of memory: the {self.config.memory_mb} MB limit was exceeded"
        return "killed by a signal, a resource limit, or the code itself"

    def _kill_pids(self, pids: list[int | None]) -> None:
        if self._main is None:
            return
        with self._main_lock:
            try:
                self._main.send({"op": "kill", "pids": [p for p in pids if p]})
                self._main.recv(time.monotonic() + 5)
            except (TimeoutError, ChannelClosed):
                pass

    def _drop_candidates(self) -> None:
        for ch in self._candidates.values():
            try:
                ch.send({"op": "exit"})
            except ChannelClosed:
                pass
            ch.close()
        self._candidates = {}
