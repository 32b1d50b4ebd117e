"""forkserver backend (root only): the unshare backend's walls, started by forking a pre-started zygote.

One fork server per host process and interpreter (`worker.forkserver_main`): a pristine worker started once
with the sandbox environment (never the host's: no API keys), with everything a kernel needs imported. A new
sandbox is a fork of it made pid 1 of a new pid namespace, which joins the sandbox's cgroup, unshares
mount/net/ipc/uts namespaces and runs the very start sequence of the unshare backend's worker (`worker.serve`:
the same read-only root built with `mounts.plan`, rlimits, uid drop, seccomp filter). No bwrap/unshare exec
and no new interpreter: ~5 ms of CPU per sandbox start (host and sandbox together) instead of ~23 (bwrap).

The read-only part of that root (everything but /work, /tmp, /proc and the socket folder) is the same for
every sandbox of a config: the server builds it once per plan (`worker.split_fs`) in a mount namespace of its
own, and each sandbox's unshare(CLONE_NEWNS) copies it; the sandbox only mounts its own four on top and
pivots into it (its root: 0.3 ms of CPU instead of 1.0). A sandbox builds its whole root itself otherwise.

Spawn requests are pipelined: the host sends one and goes on (writing the sandbox's cfg into its pipe, starting
the next) without waiting for the server's reply, which is read later, in order, by the next request or the
first use of the sandbox's pidfd. Starting 64 sandboxes at once thus costs the host one send each instead of
a round trip each (~4 ms on two busy cores, of which the server's own work was ~1).

The host holds a pidfd of that pid 1 as `self.proc`: killing it kills the namespace, and the pidfd turns
readable only once every process in it is gone. The fork server is restarted transparently when it died,
dies with the host (its socket's EOF; a parent-death signal too when started from the main thread; its
sandboxes die with it) and is stopped at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections import deque

from agentkd.sandbox.backends.base import SANDBOX_ENV, WORKER_PY, LocalProcessBackend
from agentkd.sandbox.backends.unshare import cgroup_procs, namespace_worker_cfg
from agentkd.sandbox.cgroup import Cgroup
from agentkd.sandbox.worker import HDR, encode, split_fs

BOOT = "import sys; sys.path.insert(0, {d!r}); import worker; worker.forkserver_main(sys.argv)"
REPLY_TIMEOUT_S = 10.0

_probe: dict[str, str | None] = {}  # interpreter -> why the fork server cannot run (None: it can)
_servers: dict[str, _Server] = {}  # interpreter -> its fork server in this process
_lock = threading.Lock()  # one request/reply at a time on a server's socket; guards _servers
_root: list[str] = []  # the empty host folder every sandbox mounts its new root on (private per mount namespace)
_private_root: list[str] = []  # a fallback root folder of this process (removed at exit)
_atexit: list[bool] = []


class ForkServerError(OSError):
    """The fork server could not be started or refused a request."""


class ForkServerGone(ForkServerError):
    """The fork server's socket closed: it died or was killed."""


def shared_rootdir() -> str:
    """The empty folder every sandbox mounts its new root on, inside its own private mount namespace (so they
    never see each other's, and the host sees it empty): one fixed root-owned 0700 folder in the temp dir,
    created once and reused by every process (nothing to clean up, even after a crash); a private one
    removed at exit if that path is taken by anything else."""
    with _lock:
        if not _root:
            path = os.path.join(tempfile.gettempdir(), "agentkd-forkserver-root")
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            except OSError:
                path = ""
            try:
                st = os.lstat(path) if path else None
            except OSError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o077:
                path = tempfile.mkdtemp(prefix="agentkd-fsroot-")
                _private_root.append(path)
            _root.append(path)
        return _root[0]


class _Spawn:
    """A spawn request sent to a fork server; its reply (the sandbox's pid and a pidfd of it, or why it could
    not be forked) is read later: `_Server.wait`."""

    def __init__(self, server: _Server):
        self.server = server
        self.done = False
        self.pid: int | None = None
        self.pidfd = -1
        self.error: str | None = None

    def resolve(self, timeout: float = REPLY_TIMEOUT_S) -> bool:
        """Read the reply if it was not read yet; True when the sandbox was forked."""
        if not self.done:
            with _lock:
                self.server.wait(self, timeout)
        return self.error is None


class _Server:
    def __init__(self, exe: str):
        self.exe, self.owner = exe, os.getpid()
        self._pending: deque[_Spawn] = deque()  # sent, reply not read yet (the server answers in order)
        self.dead = False  # its socket failed or it stopped answering: the next start gets a new server
        host_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        boot = {"fd": server_end.fileno(), "parent": os.getpid(),
                # the parent-death signal follows the *thread* that started it: only the main thread lives as
                # long as the process. Otherwise the server still exits on its socket's EOF when we die.
                "pdeathsig": threading.current_thread() is threading.main_thread()}
        try:
            self.proc = subprocess.Popen([exe, "-I", "-S", "-c", BOOT.format(d=str(WORKER_PY.parent)), json.dumps(boot)],
                                         env=dict(SANDBOX_ENV), cwd="/", stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         pass_fds=(server_end.fileno(),), start_new_session=True)
        except OSError:
            host_end.close()
            raise
        finally:
            server_end.close()
        self.sock = host_end
        self.sock.settimeout(REPLY_TIMEOUT_S)
        try:
            msg, _ = self._recv()
        except (OSError, ValueError) as e:
            why = self._stderr()
            self.stop()
            raise ForkServerError(f"the fork server did not start: {e}" + (f": {why}" if why else "")) from None
        assert self.proc.stderr is not None
        self.proc.stderr.close()  # it sends /dev/null its own stderr once ready
        if msg.get("op") != "ready":
            self.stop()
            raise ForkServerError(str(msg.get("error") or msg))

    def _stderr(self) -> str:
        try:
            self.proc.wait(timeout=2)
            return self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return ""

    def _recv(self) -> tuple[dict, list[int]]:
        data, fds, _, _ = socket.recv_fds(self.sock, 4096, 1)
        try:
            if len(data) < HDR.size:
                raise ForkServerGone("the fork server closed its socket")
            (n,) = HDR.unpack(data[:HDR.size])
            while len(data) < HDR.size + n:
                more = self.sock.recv(HDR.size + n - len(data))
                if not more:
                    raise ForkServerGone("the fork server closed its socket")
                data += more
            return json.loads(data[HDR.size:HDR.size + n]), fds
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def usable(self) -> bool:
        return not self.dead and self.owner == os.getpid() and self.proc.poll() is None

    def spawn(self, err_w: int, cfg_r: int, fs: list | None = None) -> _Spawn:
        """Ask for a new sandbox's first process (call with `_lock` held); it reads its request from `cfg_r`.
        Returns at once: the reply is read by a later call (`wait`, or the next `spawn`, which first takes
        the replies already there). With its mount plan `fs`, the server builds the part every sandbox of
        that plan shares once (`worker.split_fs`)."""
        while self._pending and not self.dead and select.select([self.sock], [], [], 0)[0]:
            self._read_reply()
        if self.dead:
            raise ForkServerGone("the fork server is gone")
        req: dict = {"op": "spawn"}
        if fs and fs[0][0] == "root":
            req.update(root=fs[0][1], base=split_fs(fs[1:])[0])
        socket.send_fds(self.sock, [encode(req)], [err_w, cfg_r])
        spawn = _Spawn(self)
        self._pending.append(spawn)
        return spawn

    def wait(self, spawn: _Spawn, timeout: float = REPLY_TIMEOUT_S) -> None:
        """Read replies (call with `_lock` held) until `spawn`'s has come; a server that is gone or does not
        answer within `timeout` fails every request still waiting, and is stopped (the next start gets a new
        one)."""
        while not spawn.done:  # it stays pending until answered, or failed by stop()
            if not select.select([self.sock], [], [], timeout)[0]:
                self._fail(f"the fork server did not answer within {timeout:g}s")
                return
            self._read_reply()

    def _read_reply(self) -> None:
        """Read the reply to the oldest pending request (the server answers in order)."""
        try:
            msg, fds = self._recv()
        except (OSError, ValueError) as e:
            self._fail(f"the fork server's socket failed: {e}")
            return
        spawn = self._pending.popleft()
        spawn.done = True
        if msg.get("error") or len(fds) != 1 or not isinstance(msg.get("pid"), int):
            for fd in fds:
                os.close(fd)
            spawn.error = f"the fork server could not start a sandbox: {msg.get('error') or msg}"
        else:
            spawn.pid, spawn.pidfd = msg["pid"], fds[0]

    def _fail(self, why: str) -> None:
        if _servers.get(self.exe) is self:
            _servers.pop(self.exe)
        self.stop(why)

    def stop(self, why: str = "the fork server was stopped") -> None:
        """Close our end (the server exits on EOF, taking every sandbox it forked with it) and reap it; the
        requests it did not answer fail with `why`."""
        self.dead = True
        while self._pending:
            spawn = self._pending.popleft()
            spawn.done, spawn.error = True, why
        self.sock.close()
        if self.owner != os.getpid():
            return
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.stderr:
            self.proc.stderr.close()


def _server(exe: str) -> _Server:
    """This process's fork server for `exe` (call with `_lock` held): started now if none runs."""
    s = _servers.get(exe)
    if s is not None and s.usable():
        return s
    if s is not None:
        s.stop()
    if not _atexit:
        _atexit.append(True)
        atexit.register(stop_servers)
    s = _servers[exe] = _Server(exe)
    return s


def stop_servers() -> None:
    """Stop this process's fork servers (every sandbox they started dies with them); run at exit."""
    with _lock:
        for s in _servers.values():
            s.stop()
        _servers.clear()
        _root.clear()
        while _private_root:
            shutil.rmtree(_private_root.pop(), ignore_errors=True)


def _after_fork_in_child() -> None:
    """A forked host process starts its own server: it must not share (or hold open) its parent's socket."""
    global _lock
    _lock = threading.Lock()
    for s in _servers.values():
        s.sock.close()
    _servers.clear()
    _private_root.clear()  # the parent's to remove


os.register_at_fork(after_in_child=_after_fork_in_child)


def server_pid(exe: str | None = None) -> int | None:
    """pid of this process's fork server for `exe` (default: the host interpreter), if one runs."""
    from agentkd.sandbox.backends.base import host_python

    s = _servers.get(exe or host_python())
    return s.proc.pid if s is not None and s.usable() else None


def _interpreter(config) -> str:
    """`mounts.interpreter(config)[0]`, without looking up site-packages."""
    from agentkd.sandbox.backends.base import host_python

    return os.path.realpath(shutil.which(config.python) or config.python) if config.python else host_python()


class PidfdProcess:
    """The parts of `subprocess.Popen` a LocalProcessBackend uses, over a pidfd of a process that is not our
    child (the fork server's). Its exit status is not ours to collect: `returncode` is 0 once it exited (or
    when it was never forked: `error` says why). The pidfd comes with the server's reply to `spawn`, read on
    first use."""

    def __init__(self, spawn: _Spawn, stderr_fd: int):
        self._spawn = spawn
        self.stderr = open(stderr_fd, "rb", buffering=0)  # noqa: SIM115 - closed by LocalProcessBackend.kill
        self.returncode: int | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        self._spawn.resolve()
        return self._spawn.pid

    @property
    def pidfd(self) -> int:
        return -1 if self._closed or not self._spawn.resolve() else self._spawn.pidfd

    @property
    def error(self) -> str | None:
        return self._spawn.error

    def poll(self) -> int | None:
        if self.returncode is None:
            fd = self.pidfd
            if fd < 0 or select.select([fd], [], [], 0)[0]:
                self.returncode = 0
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.poll() is None:
            if not select.select([self.pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"sandbox process {self.pid}", timeout or 0.0)
            self.returncode = 0
        return self.returncode or 0

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self.pidfd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._spawn.resolve() and self._spawn.pidfd >= 0:
                os.close(self._spawn.pidfd)
                self._spawn.pidfd = -1
        self.stderr.close()


class ForkserverBackend(LocalProcessBackend):
    name = "forkserver"

    @classmethod
    def unavailable(cls, config) -> str | None:
        if os.geteuid() != 0:
            return "needs root (as a normal user, use bwrap)"
        if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open") \
                or not hasattr(signal, "pidfd_send_signal"):
            return "needs Linux with pidfd_open and pidfd_send_signal (Python >= 3.9, kernel >= 5.3)"
        exe = _interpreter(config)
        if exe not in _probe:  # the fork server checks on start that it can make the namespaces
            try:
                with _lock:
                    _server(exe)
                _probe[exe] = None
            except OSError as e:
                _probe[exe] = str(e)
        return _probe[exe]

    def start(self, worker_cfg: dict, token: str) -> None:
        self.cgroup = Cgroup.create(*self.tree_limits())
        exe, cfg, _ = namespace_worker_cfg(self, worker_cfg, shared_rootdir())
        request = encode({"cfg": cfg, "token": token, "cgroup_procs": cgroup_procs(self.cgroup)})
        err_r, err_w = os.pipe()
        cfg_r, cfg_w = os.pipe()
        try:
            with _lock:
                server = _server(exe)
                try:
                    spawn = server.spawn(err_w, cfg_r, cfg["fs"])
                except (ConnectionError, ForkServerGone, TimeoutError):  # it died or hangs: a new one, once
                    server._fail("the fork server is gone")
                    spawn = _server(exe).spawn(err_w, cfg_r, cfg["fs"])
        except BaseException:
            for fd in (err_r, cfg_w):
                os.close(fd)
            raise
        finally:
            os.close(err_w)
            os.close(cfg_r)
        self.proc = PidfdProcess(spawn, err_r)  # type: ignore[assignment]
        # the cfg goes into the pipe now, before the server has forked the sandbox: what the pipe holds at once
        # (64 KiB, as a rule all of it); the rest only once the sandbox exists to read it
        try:
            os.set_blocking(cfg_w, False)
            view = memoryview(request)
            try:
                view = view[os.write(cfg_w, view):]
            except BlockingIOError:
                pass
            if view and spawn.resolve():
                os.set_blocking(cfg_w, True)
                while view:
                    view = view[os.write(cfg_w, view):]
        except OSError:
            pass  # it died: the start-up error surfaces through alive() and diagnostics()
        finally:
            os.close(cfg_w)

    def diagnostics(self) -> str:
        why = self.proc.error if isinstance(self.proc, PidfdProcess) else None
        return "\n".join(x for x in (why, super().diagnostics()) if x)

    def kill(self) -> None:
        """LocalProcessBackend's kill (the cgroup kill, then SIGKILL to pid 1 and a wait on its pidfd, which
        returns only once its whole pid namespace is gone, so close is synchronous without a cgroup too); then
        the pidfd is closed."""
        proc = self.proc
        try:
            super().kill()
        finally:
            if isinstance(proc, PidfdProcess):
                proc.close()
