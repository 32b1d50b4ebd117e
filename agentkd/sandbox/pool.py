"""`SandboxPool`: a fresh, pristine per-episode sandbox in a few milliseconds.

    pool = SandboxPool(SandboxConfig(episode_isolation="process"), tools)
    with pool.acquire() as sb:      # same interface as Sandbox: run, run_candidates, commit, close, ...
        sb.run("x = 1")
    pool.close()

`episode_isolation="process"`: a few warm sandboxes (containers) each hold a pristine *template* kernel
that never runs code; `acquire()` forks an episode from it (an episode root + kernel, see
`agentkd.sandbox.worker`), with its own session and process group, private work dir and a fresh
namespace. `close()` stops and kills every process the episode started and removes its work dir.
Up to `episodes_per_container` episodes share one container, whose cgroup limits are scaled by that
number. `episode_isolation="container"`: every episode is its own `Sandbox` (started ahead of time by a
background thread, so `acquire()` rarely waits; the CPU cost per episode is unchanged).

For a runner of many concurrent episodes: `acquire_ahead()` returns at once a sandbox that starts in the
background while the episode's first model call is in flight, and `release(sb)` closes it a moment later
on the pool's closing thread (`agentkd.sandbox.ahead`); `close(wait=False)` kills those too.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentkd.sandbox.ahead import AheadSandbox, DelayedCloser
from agentkd.sandbox.backends.base import Backend
from agentkd.sandbox.config import SandboxConfig, resolve_config
from agentkd.sandbox.isolation import host_spec, judge
from agentkd.sandbox.protocol import Channel, ChannelClosed, took_hello
from agentkd.sandbox.sandbox import Sandbox, SandboxError, _cleanup, _locked, choose_backend, worker_cfg

log = logging.getLogger(__name__)


class _Box:
    """One warm sandbox whose kernel 0 is a pristine template; episodes are forked from it."""

    def __init__(self, pool: SandboxPool):
        self.pool = pool
        self.config = pool.config
        self.slots = pool.episodes_per_container
        self.active = 0  # episodes placed here (guarded by the pool's lock)
        self.broken = False
        self.closed = False
        self.impl: Backend | None = None
        self.template: Channel | None = None
        self.start_time_s: float | None = None
        self._kids = itertools.count(1)
        self._lock = threading.Lock()  # guards _arrived/_waiting
        self._tlock = threading.Lock()  # one exchange at a time with the template
        self._start_lock = threading.Lock()
        self._start_error: BaseException | None = None
        self._arrived: dict[tuple[int, str], Channel] = {}
        self._waiting: dict[tuple[int, str], list] = {}
        self._finalizer: weakref.finalize | None = None
        self.token = secrets.token_hex(16)
        self.listener: socket.socket | None = None
        self.probe_spec: dict | None = None  # what the template's probe compared against, and what it found
        self.probe: dict | None = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the container and its template (once; later callers wait for the first)."""
        with self._start_lock:
            if self.template is not None:
                return
            if self._start_error is not None:
                raise SandboxError(f"the pooled sandbox failed to start: {self._start_error}")
            try:
                self._start()
            except BaseException as e:
                self._start_error = e
                self.broken = True
                self.close()
                raise

    def _start(self) -> None:
        from agentkd.sandbox import seccomp

        sockdir = tempfile.mkdtemp(prefix="agentkd-pool-")
        os.chmod(sockdir, 0o711)
        path = os.path.join(sockdir, "ctl.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o666)
        self.listener.listen(512)
        # the shared work-dir tmpfs holds every episode's private folder: sized for all of them
        shared = self.config.model_copy(update={"work_dir_mb": self.config.work_dir_mb * self.slots})
        self.impl = self.pool._cls(shared, sockdir, episodes=self.slots)
        self._finalizer = weakref.finalize(self, _cleanup, self.impl, self.listener, sockdir)
        threading.Thread(target=self._accept_loop, args=(self.listener,), daemon=True,
                         name="sandbox-pool-accept").start()
        prog = seccomp.build_episode()
        c = self.config
        cfg = {**worker_cfg(c, self.pool.tools), "template": True, "episode_seccomp": prog.hex() if prog else None,
               "probe": host_spec(sockdir)}
        self.probe_spec = cfg["probe"]
        t0 = time.perf_counter()
        self.impl.start(cfg, self.token)
        deadline = time.monotonic() + c.start_timeout_s
        while True:
            try:
                self.template = self.wait(0, "kernel", min(deadline, time.monotonic() + 0.2))
                self.probe = self.template.hello.get("probe")
                break
            except TimeoutError:
                if not self.impl.alive():
                    why = self.impl.diagnostics().strip()
                    raise SandboxError(f"the {self.impl.name} sandbox exited before its worker connected"
                                       + (f": {why}" if why else "")) from None
                if time.monotonic() >= deadline:
                    raise SandboxError(f"the {self.impl.name} worker did not connect within "
                                       f"{c.start_timeout_s:g}s") from None
        self.start_time_s = time.perf_counter() - t0

    def kill_now(self) -> None:
        """SIGKILL every process of this container at once; `close()` waits for them and cleans up."""
        if self.impl is not None:
            self.impl.kill_now()

    def close(self) -> None:
        self.closed = True
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.template is not None:
            self.template.close()
        if self._finalizer is not None:
            self._finalizer()
        with self._lock:
            for ch in self._arrived.values():
                ch.close()
            self._arrived.clear()
            for slot in self._waiting.values():
                slot[0].set()

    # -- hellos -------------------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        while not self.closed:
            try:
                conn, _ = listener.accept()
            except OSError:
                if self.closed:
                    return
                time.sleep(0.01)
                continue
            ch = Channel(conn)
            try:
                hello = ch.recv(time.monotonic() + 2.0)
            except (TimeoutError, ChannelClosed):
                ch.close()
                continue
            if not isinstance(hello, dict) or hello.get("op") != "hello" or hello.get("token") != self.token:
                ch.close()
                continue
            took_hello(ch, hello)
            key = (ch.kid, ch.role)
            with self._lock:
                slot = self._waiting.pop(key, None)
                if slot is not None:
                    slot[1] = ch
                    slot[0].set()
                else:
                    old = self._arrived.pop(key, None)
                    if old is not None:  # a second hello for the same kernel: keep neither
                        old.close()
                        ch.close()
                    else:
                        self._arrived[key] = ch

    def wait(self, kid: int, role: str, deadline: float) -> Channel:
        """The channel of kernel `kid` (role "kernel" or "root") once it has said hello."""
        key = (kid, role)
        with self._lock:
            ch = self._arrived.pop(key, None)
            if ch is not None:
                return ch
            slot = self._waiting.setdefault(key, [threading.Event(), None])
        slot[0].wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if slot[1] is None:
                self._waiting.pop(key, None)
                if self.closed:
                    raise ChannelClosed("the pooled sandbox was closed")
                raise TimeoutError(f"kernel {kid} ({role}) did not connect in time")
            return slot[1]

    def new_kids(self, n: int) -> list[int]:
        return [next(self._kids) for _ in range(n)]

    # -- episodes -----------------------------------------------------------------------------------
    def spawn(self) -> tuple[Channel, Channel]:
        """Fork a fresh episode from the template: (root channel, kernel channel)."""
        assert self.template is not None
        (kid,) = self.new_kids(1)
        deadline = time.monotonic() + self.config.start_timeout_s
        try:
            with self._tlock:
                self.template.send({"op": "episode", "kid": kid})
                reply = self.template.recv(deadline)
        except (TimeoutError, ChannelClosed) as e:
            self.broken = True
            raise SandboxError(f"the pooled sandbox's template did not answer ({e})") from None
        if not reply.get("pids"):
            raise SandboxError(f"could not fork an episode: {reply.get('error') or 'unknown'}")
        try:
            root = self.wait(kid, "root", deadline)
            kernel = self.wait(kid, "kernel", deadline)
        except (TimeoutError, ChannelClosed) as e:
            self.reap(reply["pids"][0], [reply["pids"][0]], None)
            raise SandboxError(f"a new episode did not connect ({e})") from None
        return root, kernel

    def reap(self, sid: int | None, pids: list, workdir: str | None) -> None:
        """Kill an episode through the template (when its root is gone): its session and known pids."""
        if self.template is None or self.closed:
            return
        try:
            with self._tlock:
                self.template.send({"op": "reap", "sid": sid, "pids": [p for p in pids if p], "workdir": workdir})
                self.template.recv(time.monotonic() + 10)
        except (TimeoutError, ChannelClosed):
            self.broken = True


def _end_episode(root: Channel | None, pool: SandboxPool, box: _Box) -> None:
    """Finalizer of an episode never closed: dropping the root's connection makes it kill the episode's
    processes; the slot goes back to the pool."""
    if root is not None:
        root.close()
    pool._release(box)


class PooledSandbox(Sandbox):
    """One episode forked from a `SandboxPool` template (process mode); the `Sandbox` interface.

    `restart()` (also after a hard timeout or a worker death) kills the episode's processes and forks a
    fresh one; `close()` kills them and hands the slot back to the pool."""

    def __init__(self, pool: SandboxPool):
        super().__init__(pool.config, pool.tools)
        self._pool = pool
        self._cls = pool._cls
        self._box: _Box | None = None
        self._root: Channel | None = None
        self._pending: dict[int, Channel] = {}

    def isolation_report(self) -> dict[str, dict]:
        """The walls the template kernel of this episode's sandbox found (its episodes share them), and
        `episode_container` False: episodes are not walled off from one another."""
        self.start()
        box = self._box
        assert box is not None
        main = self._main
        report = judge(box.probe, box.probe_spec, main.peer if main is not None else None,
                       self.config.work_dir_mb * box.slots)
        report["episode_container"] = {"ok": False, "why": f"up to {box.slots} episodes share this sandbox"}
        return report

    @_locked
    def start(self) -> None:
        if self._main is not None:
            return
        t0 = time.perf_counter()
        for attempt in range(3):
            if self._box is None:
                self._box = self._pool._reserve()
            box = self._box
            try:
                box.start()
                self._root, self._main = box.spawn()
                break
            except (SandboxError, ChannelClosed, TimeoutError):
                self._pool._release(box)
                self._box = None
                if attempt == 2:
                    raise
        assert self._box is not None
        self._impl, self._token = self._box.impl, self._box.token
        self._generation += 1
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _end_episode, self._root, self._pool, self._box)
        self.start_time_s = time.perf_counter() - t0

    def _end(self) -> None:
        """Kill every process of the current episode (through its root; through the template if it is gone)."""
        self._drop_candidates()
        kernel_pid = self._main.pid if self._main is not None else None
        if self._main is not None:
            self._main.close()
            self._main = None
        root, self._root = self._root, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if root is None:
            return
        ok = False
        try:
            root.send({"op": "close"})
            ok = root.recv(time.monotonic() + 10).get("op") == "closed"
        except (TimeoutError, ChannelClosed, AttributeError):
            pass
        root.close()
        if not ok and self._box is not None:  # the root was killed: fall back on its session and known pids
            self._box.reap(root.pid, [root.pid, kernel_pid], f"{self._workdir_base()}/e{root.kid}")

    def _workdir_base(self) -> str:
        from agentkd.sandbox.backends.mounts import WORKDIR

        return WORKDIR

    @_locked
    def restart(self) -> None:
        """Kill the episode (every process it started) and fork a fresh one: all state is lost."""
        self._end()
        if self._box is not None and self._box.broken:
            self._pool._release(self._box)
            self._box = None
        self.restarts += 1
        self._generation += 1
        self.start()

    @_locked
    def close(self) -> None:
        """Kill every process of the episode and return its slot to the pool."""
        self._end()
        if self._box is not None:
            self._pool._release(self._box)
            self._box = None
        self._impl = None

    def _new_kids(self, n: int) -> list[int]:
        assert self._box is not None
        return self._box.new_kids(n)

    def _accept_candidates(self, kids: list[int], deadline: float) -> dict[int, Channel]:
        assert self._box is not None
        return {kid: self._box.wait(kid, "kernel", deadline) for kid in kids}


class SandboxPool:
    """Hands out fresh per-episode sandboxes; see the module docstring and `agentkd.sandbox`."""

    def __init__(self, config: SandboxConfig | None = None, tools: Mapping[str, Callable[..., Any]] | None = None,
                 *, warm: int = 2, **overrides: Any):
        self.config = config = resolve_config(config, overrides)
        self.tools = dict(tools or {})
        self.mode = config.episode_isolation
        self.episodes_per_container = config.episodes_per_container
        self.warm = max(0, warm)  # container mode: sandboxes kept started ahead
        self._cls_: type[Backend] | None = None
        self._lock = threading.Lock()
        self._boxes: list[_Box] = []
        self._ready: collections.deque[Sandbox] = collections.deque()
        self._out: weakref.WeakSet[Sandbox] = weakref.WeakSet()  # container mode: sandboxes handed out
        self._want = threading.Event()
        self._closed = False
        self._warmer: threading.Thread | None = None
        self._ahead: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None  # launcher, completer
        self._closer: DelayedCloser | None = None

    @property
    def _cls(self) -> type[Backend]:
        if self._cls_ is None:
            self._cls_, _ = choose_backend(self.config)
        return self._cls_

    @property
    def backend(self) -> str:
        return self._cls.name

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def acquire(self, wait: bool = True) -> Sandbox:
        """A sandbox for one episode, in pristine state; the caller closes it. `wait=False` (container
        mode): return as soon as its worker was launched; it boots in the background and its `start()` (or
        first run) waits for it, so one thread can start many sandboxes that boot in parallel."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        if self.mode == "container":
            return self._acquire_container(wait)
        sb = PooledSandbox(self)
        sb.start()
        return sb

    def acquire_ahead(self) -> AheadSandbox:
        """A sandbox for one episode that starts in the background (launched in order by one thread,
        picked up once connected by another); its `arun` waits for it. Hand it back with `release`."""
        if self._closed:
            raise SandboxError("the sandbox pool is closed")
        with self._lock:
            if self._ahead is None:
                self._ahead = (ThreadPoolExecutor(1, thread_name_prefix="sandbox-launch"),
                               ThreadPoolExecutor(1, thread_name_prefix="sandbox-start"))
            launcher, completer = self._ahead
        return AheadSandbox(lambda: self.acquire(wait=False), self.backend, launcher, completer)

    def release(self, sandbox: Sandbox | AheadSandbox, delay_s: float = 0.1) -> None:
        """Close an episode's sandbox `delay_s` from now on the pool's closing thread (off the caller's
        critical path); `close()` kills the ones still waiting."""
        with self._lock:
            if self._closer is None and not self._closed:
                self._closer = DelayedCloser()
            closer = self._closer
        try:
            if closer is None:
                raise RuntimeError("closed")
            closer.close_later(sandbox, delay_s)
        except RuntimeError:  # the pool is closed: close it now
            sandbox.close()

    def close(self, wait: bool = True) -> None:
        """Stop every sandbox the pool started, including episodes still open (they lose their processes).

        `wait=False`: with the local backends every process is sent SIGKILL before this returns (no code of
        an episode runs any more; Docker containers are killed through the daemon by the clean-up), and
        waiting for them to exit and removing their cgroups, sockets and folders finishes in a background
        thread, which the interpreter joins before it exits."""
        self._closed = True
        self._want.set()
        with self._lock:
            boxes, self._boxes = self._boxes, []
            sandboxes = [*self._ready, *self._out]
            self._ready.clear()
            ahead, self._ahead = self._ahead, None
            closer, self._closer = self._closer, None
        if ahead is not None:
            for threads in ahead:
                threads.shutdown(wait=False, cancel_futures=True)
        if closer is not None:  # released, not closed yet
            waiting = [sb.sandbox if isinstance(sb, AheadSandbox) else sb for sb in closer.stop()]
            sandboxes += [sb for sb in waiting if sb is not None and sb not in sandboxes]
        if not wait:
            for b in boxes:
                b.kill_now()
            for sb in sandboxes:
                sb.kill_now()
            threading.Thread(target=self._finish_close, args=(boxes, sandboxes), name="sandbox-pool-cleanup").start()
            return
        self._finish_close(boxes, sandboxes)

    @staticmethod
    def _finish_close(boxes: list[_Box], sandboxes: list[Sandbox]) -> None:
        # each close kills and waits for its sandbox: in parallel, not one after the other
        closers = [threading.Thread(target=b.close, daemon=True, name="sandbox-pool-close") for b in boxes[1:]]
        for t in closers:
            t.start()
        if boxes:
            boxes[0].close()
        for sb in sandboxes:
            try:
                sb.close()
            except Exception as e:  # one sandbox that cannot be closed must not leave the others running
                log.warning("closing a sandbox failed: %s", e)
        for t in closers:
            t.join()

    # -- process mode -------------------------------------------------------------------------------
    def _reserve(self) -> _Box:
        with self._lock:
            if self._closed:
                raise SandboxError("the sandbox pool is closed")
            free = [b for b in self._boxes if not b.broken and not b.closed and b.active < b.slots]
            box = min(free, key=lambda b: b.active) if free else None
            if box is None:
                box = _Box(self)
                self._boxes.append(box)
            box.active += 1
        return box

    def _release(self, box: _Box) -> None:
        with self._lock:
            box.active -= 1
            retire = (box.broken or box.closed) and box.active <= 0
            if retire and box in self._boxes:
                self._boxes.remove(box)
        if retire:
            box.close()

    # -- container mode -----------------------------------------------------------------------------
    def _acquire_container(self, wait: bool = True) -> Sandbox:
        with self._lock:
            sb = self._ready.popleft() if self._ready else None
            if self.warm and self._warmer is None:
                self._warmer = threading.Thread(target=self._warm_loop, daemon=True, name="sandbox-pool-warm")
                self._warmer.start()
        self._want.set()
        if sb is None:
            sb = Sandbox(self.config, self.tools)
            with self._lock:
                self._out.add(sb)
            if wait:
                sb.start()
            else:
                sb.launch()
        else:
            with self._lock:
                self._out.add(sb)
        if self._closed:  # closed while this one started: it is not handed out
            sb.close()
            raise SandboxError("the sandbox pool is closed")
        return sb

    def _warm_loop(self) -> None:
        sb: Sandbox | None = None
        while not self._closed:
            self._want.wait()
            self._want.clear()
            while not self._closed and len(self._ready) < self.warm:
                sb = Sandbox(self.config, self.tools)
                try:
                    sb.start()
                except Exception as e:  # surfaces again on the synchronous start in acquire()
                    log.debug("warm sandbox failed to start: %s", e)
                    sb.close()
                    break
                with self._lock:
                    if self._closed:
                        break
                    self._ready.append(sb)
                sb = None
            if sb is not None and self._closed:
                sb.close()
