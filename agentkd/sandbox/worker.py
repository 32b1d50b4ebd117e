"""The process that runs inside the sandbox: a persistent Python kernel speaking agentkd's worker protocol.

Standard library only, and importable without side effects: the host reuses the framing from here.
Started as ``python -I -S -c "import worker; worker.main(sys.argv)" CONFIG_JSON`` (so its cached
bytecode is used) with the token in ``$AGENTKD_TOKEN``.

Process layout inside the sandbox::

    launcher (applies rlimits, drops to the sandbox uid, reaps orphans; holds no user state)
      └─ kernel 0 (runs code, holds the namespace; connects to the host's Unix socket)
           └─ kernel N (a forked candidate: its own connection, a copy-on-write copy of the state, and
                        its own copy of the work dir, WORK/.agentkd-fork-N, which ``adopt`` moves into place)

With ``cfg["template"]`` (`SandboxPool`'s process mode) kernel 0 is a pristine *template* that never runs
code; each ``episode`` {kid} forks from it::

      └─ template kernel (pristine namespace; SIGCHLD ignored, so exited episode roots are reaped)
           └─ episode root (own session, child subreaper, private work dir /work/eKID; holds no user state)
                └─ episode kernel (own process group; runs the episode's code) └─ its candidates, children

The root keeps every process the episode starts in its subtree (orphans are re-parented to it, not to
the launcher), and on ``close`` (or when its connection drops) stops and kills that subtree, removes
the work dir and exits.

Messages are 4-byte big-endian length + UTF-8 JSON. Host -> kernel: ``run`` {code, soft}, ``fork`` {kids},
``kill`` {pids}, ``exit``, ``adopt`` (a committed candidate's work-dir copy becomes the work dir), and ``return``/``raise`` answering a kernel's ``call`` {name, args, kwargs};
host -> template: ``episode`` {kid}, ``reap`` {sid, pids}; host -> episode root: ``close``.
Kernel -> host: ``hello`` {kid, token, pid, role; kernel 0 adds ``probe``, see `probe_walls`}, ``result`` {...},
``forked`` {pids}, ``adopted``, ``call``;
root -> host: ``hello`` (role "root"), ``closed``.
"""

from __future__ import annotations

import _thread
import builtins
import io
import json
import os
import signal
import struct
import sys
import time

HDR = struct.Struct(">I")
MAX_MSG = 64 * 1024 * 1024  # also bounds what a hostile sandbox can make the host allocate


class ChannelClosed(Exception):
    """The other side of the worker channel went away."""


def encode(obj, strict: bool = False) -> bytes:
    data = json.dumps(obj, ensure_ascii=False, default=None if strict else str).encode("utf-8", "surrogatepass")
    return HDR.pack(len(data)) + data


def recv_exact(sock, n: int, buf: bytearray) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(min(max(65536, n - len(buf)), 1 << 20))
        if not chunk:
            raise ChannelClosed("connection closed")
        buf += chunk
    out = bytes(buf[:n])
    del buf[:n]
    return out


def recv(sock, buf: bytearray):
    (n,) = HDR.unpack(recv_exact(sock, 4, buf))
    if n > MAX_MSG:
        raise ChannelClosed(f"message of {n} bytes exceeds the protocol limit")
    return json.loads(recv_exact(sock, n, buf).decode("utf-8", "surrogatepass"))


def jsonable(x):
    """`x` if JSON can carry it unchanged, else `.tolist()` (numpy) or `str(x)`."""
    try:
        json.dumps(x)
        return x
    except (TypeError, ValueError, OverflowError, RecursionError):
        pass
    tolist = getattr(x, "tolist", None)
    if callable(tolist):
        try:
            v = tolist()
            json.dumps(v)
            return v
        except Exception:
            pass
    try:
        return str(x)
    except Exception:
        return f"<unprintable {type(x).__name__}>"


class FinalAnswer(BaseException):
    """Raised by `final_answer(x)`: stops the code; `except Exception` cannot swallow it."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


class SandboxTimeout(BaseException):
    """The soft time limit expired; the kernel and its state survive."""


class _CappedRaw(io.RawIOBase):
    """fd writer that keeps at most `cap` bytes per run and counts (but drops) the rest."""

    def __init__(self, fd: int, cap: int):
        self.fd, self.cap, self.kept, self.dropped = fd, cap, 0, 0

    def writable(self):
        return True

    def write(self, b):
        n = len(b)
        room = self.cap - self.kept
        if room > 0:
            k = min(room, n)
            try:
                k = os.write(self.fd, bytes(b[:k]))
            except OSError:
                k = 0
            self.kept += k
            self.dropped += n - k
        else:
            self.dropped += n
        return n


def _host_exception(name: str, message: str, args=None) -> BaseException:
    cls = getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = type(name, (Exception,), {"__module__": "builtins"})
    try:
        exc = cls(*args) if isinstance(args, list) else cls(message)
        return exc if str(exc) == message else cls(message)
    except Exception:
        return RuntimeError(f"{name}: {message}")


def _children_map() -> dict[int, list[int]]:
    """parent pid -> child pids, for every process this pid namespace's /proc shows."""
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    st = f.read()
                ppid = int(st[st.rindex(b")") + 2:].split(None, 2)[1])
            except (OSError, ValueError, IndexError):
                continue
            out.setdefault(ppid, []).append(int(d))
    return out


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
        return int(st[st.rindex(b")") + 2:].split(None, 4)[3])
    except (OSError, ValueError, IndexError):
        return None


def kill_tree(roots: list[int], sid: int | None = None) -> int:
    """SIGSTOP, then SIGKILL, every descendant of `roots` (and, with `sid`, every process of that session).

    Stopped processes cannot fork, so repeating the scan until it finds nothing new catches children
    forked while it runs. Returns how many processes were killed."""
    me = os.getpid()
    stopped: set[int] = set()
    for _ in range(64):
        children = _children_map()
        todo, found = list(roots), set()
        while todo:
            for c in children.get(todo.pop(), ()):
                if c not in found and c != me:
                    found.add(c)
                    todo.append(c)
        if sid is not None:
            found |= {p for kids in children.values() for p in kids if p != me and _session_of(p) == sid}
            found |= {r for r in roots if r != me and _session_of(r) == sid}
        new = found - stopped
        if not new:
            break
        signal_all(new, signal.SIGSTOP)
        stopped |= new
    signal_all(stopped, signal.SIGKILL)
    return len(stopped)


def signal_all(pids, sig: int) -> None:
    """Send `sig` to each of `pids`; those already gone are skipped."""
    for p in pids:
        try:
            os.kill(p, sig)
        except OSError:
            pass


class _ReapTimeout(BaseException):
    pass


def _reap_timeout(signum, frame):
    raise _ReapTimeout


def _reap_all(within: float) -> bool:
    """Wait (blocking) for every child of this process; True when none is left within `within` seconds."""
    old = signal.signal(signal.SIGALRM, _reap_timeout)
    try:
        signal.setitimer(signal.ITIMER_REAL, within)
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        return True
    except _ReapTimeout:
        return False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _end_episode(kernel_pid: int) -> None:
    """In an episode root: kill everything below it. Fast path: SIGKILL the kernel's process group (the
    kernel, its candidates and the children that kept the group) and reap; once the root has no child
    left, nothing of the episode is left (orphans are re-parented to the root). Otherwise scan /proc."""
    try:
        os.killpg(kernel_pid, signal.SIGKILL)
    except OSError:
        pass
    if not _reap_all(0.05):
        kill_tree([os.getpid()])
        _reap_all(2.0)


def _rmtree(path: str) -> None:
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(root, name))
            except OSError:
                pass
        for name in dirs:
            p = os.path.join(root, name)
            try:
                os.rmdir(p) if not os.path.islink(p) else os.unlink(p)
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


FORK_DIR = ".agentkd-fork-"


def _clear(folder: str, keep: str | None = None) -> None:
    """Remove everything in `folder` but the entry named `keep`."""
    for name in os.listdir(folder):
        if name != keep:
            p = os.path.join(folder, name)
            _rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else _unlink(p)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def probe_walls(spec: dict) -> dict:
    """What this process finds of the host, from inside the sandbox: raw facts for the host to judge
    (`agentkd.sandbox.isolation`). `spec` (from the host): its net/pid namespace inodes, the device and inode of
    its "/", its pid and start time, a host folder that must stay invisible, and the port of a TCP listener
    it opened on 127.0.0.1. Run by kernel 0 just before its hello, when every wall is up (seccomp included).
    Raw reads and a few syscalls: ~0.1 ms of CPU."""
    import _socket
    import resource

    def ns(kind: str):
        try:
            return os.stat(f"/proc/self/ns/{kind}").st_ino
        except OSError:
            return None

    def read(path: str) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return os.read(fd, 1 << 16)
        except OSError:
            return None
        finally:
            os.close(fd)

    out: dict = {"net_ns": ns("net"), "pid_ns": ns("pid")}
    dev = read("/proc/net/dev")  # the interfaces of this network namespace
    out["interfaces"] = None if dev is None else [ln.split(b":")[0].strip().decode() for ln in dev.splitlines()[2:]]
    try:
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    except OSError as e:
        out["reach"] = f"socket: {e.strerror}"
    else:
        try:
            s.settimeout(1.0)
            s.connect(("127.0.0.1", int(spec.get("port") or 0)))
            out["reach"] = True
        except OSError as e:
            out["reach"] = f"connect: {e.strerror or e}"
        finally:
            s.close()
    try:
        st = os.stat("/")
        out["root"] = [st.st_dev, st.st_ino]
    except OSError:
        out["root"] = None
    try:
        os.stat(spec.get("canary") or "/nonexistent")
        out["canary"] = True
    except PermissionError:
        out["canary"] = True  # it exists: only its permissions hide it
    except OSError:
        out["canary"] = False
    stat = read(f"/proc/{int(spec.get('host_pid') or 0)}/stat")
    out["host_pid_seen"] = bool(stat) and stat.rsplit(b")", 1)[-1].split()[19:20] == [str(spec.get("host_start")).encode()]
    status = read("/proc/self/status") or b""
    for key, name in (("cap_eff", b"\nCapEff:"), ("seccomp", b"\nSeccomp:"), ("no_new_privs", b"\nNoNewPrivs:")):
        i = status.find(name)
        out[key] = status[i + len(name):status.find(b"\n", i + 1)].strip().decode() if i >= 0 else None
    out["uid"], out["gid"], out["groups"] = os.getuid(), os.getgid(), os.getgroups()
    euid = os.geteuid()
    if euid == 0:  # root here may be an unprivileged host uid in a user namespace (uid_map: inside outside count)
        out["host_uid"] = None
        for line in (read("/proc/self/uid_map") or b"").splitlines():
            f = line.split()
            if len(f) == 3 and int(f[0]) == 0:
                out["host_uid"] = int(f[1])
    out["rlimits"] = {n: resource.getrlimit(getattr(resource, n))[0]
                      for n in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NPROC")}
    try:
        v = os.statvfs(".")  # the kernel runs in its work dir
        out["workdir_bytes"] = v.f_blocks * v.f_frsize
    except OSError:
        out["workdir_bytes"] = None
    return out


class Kernel:
    def __init__(self, cfg: dict, token: str, kid: int):
        self.cfg = cfg
        self.token = token
        self.cap = int(cfg.get("max_output", 20000))
        self.ns: dict = {"__name__": "__main__", "__builtins__": builtins}
        self.cell = 0
        self.in_user = False
        self._capture = None
        self._call_lock = _thread.allocate_lock()
        self.tool_names = list(cfg.get("tools", []))
        self.allowed = cfg.get("allowed_imports")
        self._stdlib = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
        self.template = bool(cfg.get("template"))
        # kernel 0 reports the walls it finds in its hello (candidates and episodes share its sandbox)
        self._connect(kid, probe=probe_walls(cfg["probe"]) if kid == 0 and cfg.get("probe") else None)
        self._install()
        if self.template:
            import ast  # noqa: F401 - imported once here, shared copy-on-write by every episode
            import ctypes  # noqa: F401
            import linecache  # noqa: F401
            import traceback  # noqa: F401

            signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # episode roots are reaped automatically
            _libc()
            prog = cfg.get("episode_seccomp")
            self._episode_filter = _seccomp_loader(bytes.fromhex(prog)) if prog else None
            import gc

            gc.freeze()  # the cyclic GC leaves the template's objects alone in episodes: fewer copy-on-write faults

    # -- channel ------------------------------------------------------------------------------------
    def _connect(self, kid: int, role: str = "kernel", probe: dict | None = None):
        import _socket  # the C module: `socket` would import enum & co. (~3 ms of start-up)

        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        s.connect(self.cfg["socket"])
        self.sock, self.buf, self.pid = s, bytearray(), os.getpid()
        hello = {"op": "hello", "kid": kid, "token": self.token, "pid": os.getpid(), "role": role}
        if probe is not None:
            hello["probe"] = probe
        self.send(hello)

    def send(self, obj):
        self.sock.sendall(encode(obj))

    def recv(self):
        return recv(self.sock, self.buf)

    # -- namespace ----------------------------------------------------------------------------------
    def _install(self):
        kernel = self

        if "final_answer" in self.tool_names:  # a host tool that does more than return its argument
            def final_answer(*args, **kwargs):
                raise FinalAnswer(kernel.call("final_answer", args, kwargs))
        else:
            def final_answer(answer):
                raise FinalAnswer(answer)

        builtins.final_answer = final_answer
        for name in self.tool_names:
            if name != "final_answer":
                self.ns[name] = self._tool(name)
        real_import = builtins.__import__

        def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
            if kernel.allowed is not None and level == 0 and globals is kernel.ns:
                top = name.partition(".")[0]
                ok = top in kernel.allowed or ("stdlib" in kernel.allowed and top in kernel._stdlib)
                if not ok and "*" not in kernel.allowed:
                    raise ImportError(f"import of {top!r} is not allowed in this sandbox "
                                      f"(allowed: {', '.join(kernel.allowed)})")
            return real_import(name, globals, locals, fromlist, level)

        builtins.__import__ = guarded_import
        signal.signal(signal.SIGALRM, self._on_alarm)
        self.devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(self.devnull, fd)

    def _tool(self, name: str):
        kernel = self

        def tool(*args, **kwargs):
            return kernel.call(name, args, kwargs)

        tool.__name__ = tool.__qualname__ = name
        tool.__doc__ = f"Host tool {name!r} (runs outside the sandbox)."
        return tool

    def call(self, name, args, kwargs):
        if os.getpid() != self.pid:
            raise RuntimeError("host tools can only be called from the sandbox's main process, not a forked child")
        try:
            payload = encode({"op": "call", "name": name, "args": list(args), "kwargs": dict(kwargs)}, strict=True)
        except (TypeError, ValueError) as e:
            raise TypeError(f"arguments to tool {name!r} must be JSON-serialisable: {e}") from None
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        try:
            with self._call_lock:  # user threads may call tools concurrently: one exchange at a time
                self.sock.sendall(payload)
                msg = self.recv()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if msg.get("op") == "return":
            return msg.get("value")
        raise _host_exception(msg.get("type", "ToolError"), msg.get("message", ""), msg.get("args"))

    def _on_alarm(self, signum, frame):
        if self.in_user:
            self.in_user = False
            raise SandboxTimeout(f"execution exceeded the soft time limit of {self.soft:g}s")

    # -- main loop ----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Run a no-op cell through the whole run path once, right after the hello and before the first
        request: the pages a run touches are copied (copy-on-write after the fork) and caches filled now,
        while the host is still waiting for the model's first action, instead of during the first real run.
        Leaves no trace: cell numbers, line cache and namespace are as before."""
        import linecache

        if self.template or self.cell:
            return
        import _socket

        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:  # the same path as a real run: framed message in, run, framed result out
            a.sendall(encode({"op": "run", "code": "print(0)\nNone", "soft": 1.0}))
            msg = recv(b, bytearray())
            b.sendall(encode(self.run(msg["code"], msg["soft"])))
            recv(a, bytearray())
        except BaseException:
            pass
        finally:
            a.close()
            b.close()
        linecache.cache.pop(f"<cell {self.cell}>", None)
        self.cell = 0
        self._capture = self._prepare_capture()

    def loop(self):
        self.warm_up()
        self.home = os.getcwd()  # the work dir; candidates work on a copy of it (`_private_workdir`)
        self.fork_dir: str | None = None
        self.forked = False
        while True:
            try:
                msg = self.recv()
            except (ChannelClosed, OSError):
                os._exit(0)
            op = msg.get("op")
            if self.template:
                self._template_op(op, msg)
            elif op == "run":
                if self.forked:  # the dropped candidates' copies of the work dir, before the code sees it
                    self.forked = False
                    self._drop_fork_dirs()
                self.send(self.run(msg.get("code", ""), float(msg.get("soft", 10.0))))
                self._capture = self._prepare_capture()
            elif op == "fork":
                pids, err, child = [], None, False
                self._drop_fork_dirs()
                self.forked = True
                for kid in msg["kids"]:
                    try:
                        pid = os.fork()
                    except OSError as e:
                        err = f"fork failed: {e}"
                        break
                    if pid == 0:
                        child = True
                        self._drop_capture()  # shared with the parent: make our own on the first run
                        self.sock.close()
                        self.forked = False
                        self._private_workdir(kid)
                        self._connect(kid)
                        break
                    pids.append(pid)
                if not child:
                    self.send({"op": "forked", "pids": pids, "error": err})
            elif op == "kill":
                for pid in msg.get("pids", []):
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
                self.send({"op": "killed"})
            elif op == "adopt":
                self._adopt_workdir()
                self.send({"op": "adopted"})
            elif op == "exit":
                if self.fork_dir:  # a dropped candidate: its files go with it
                    _rmtree(self.fork_dir)
                os._exit(0)

    # -- forked candidates' files -------------------------------------------------------------------
    def _private_workdir(self, kid: int) -> None:
        """Files are state too: a forked candidate works in its own copy of the work dir (cwd, and HOME and
        TMPDIR where they pointed at it), so what a losing candidate writes there is dropped with it.
        Absolute paths into the main work dir are not redirected. No room for the copy: the candidate
        shares the main work dir (as before this existed)."""
        home, cwd = self.home, os.getcwd()
        copy = os.path.join(home, f"{FORK_DIR}{kid}")
        try:
            names = [n for n in os.listdir(home) if not n.startswith(FORK_DIR)]
            os.mkdir(copy, 0o700)
            if names:
                import shutil

                for n in names:
                    src, dst = os.path.join(home, n), os.path.join(copy, n)
                    if os.path.isdir(src) and not os.path.islink(src):
                        shutil.copytree(src, dst, symlinks=True)
                    else:
                        shutil.copy2(src, dst, follow_symlinks=False)
        except OSError:
            _rmtree(copy)
            return
        self.fork_dir = copy
        rel = os.path.relpath(cwd, home)
        os.chdir(os.path.join(copy, rel) if not rel.startswith("..") else copy)
        for var in ("HOME", "TMPDIR"):
            if os.environ.get(var) == home:
                os.environ[var] = copy

    def _drop_fork_dirs(self) -> None:
        """Remove the copies of the last round's candidates (those killed without cleaning up too)."""
        for name in os.listdir(self.home):
            if name.startswith(FORK_DIR):
                _rmtree(os.path.join(self.home, name))

    def _adopt_workdir(self) -> None:
        """This candidate was committed: its copy of the work dir replaces the work dir."""
        copy, self.fork_dir = self.fork_dir, None
        if copy is None:
            return
        home = self.home
        rel = os.path.relpath(os.getcwd(), copy)
        _clear(home, keep=os.path.basename(copy))
        for n in os.listdir(copy):
            os.rename(os.path.join(copy, n), os.path.join(home, n))
        os.rmdir(copy)
        os.chdir(os.path.join(home, rel) if not rel.startswith("..") else home)
        for var in ("HOME", "TMPDIR"):
            if os.environ.get(var) == copy:
                os.environ[var] = home

    # -- template (SandboxPool process mode) -------------------------------------------------------------
    def _template_op(self, op, msg: dict) -> None:
        if op == "episode":
            try:
                pid = os.fork()
            except OSError as e:
                self.send({"op": "forked", "pids": [], "error": f"fork failed: {e}"})
                return
            if pid == 0:
                try:
                    self._episode_root(int(msg["kid"]))
                except BaseException:
                    pass
                os._exit(1)
            self.send({"op": "forked", "pids": [pid]})
        elif op == "reap":  # fallback when an episode's root is gone: kill by session and known pids
            n = kill_tree([int(p) for p in msg.get("pids", [])], msg.get("sid"))
            for p in msg.get("pids", []):
                try:
                    os.kill(int(p), signal.SIGKILL)
                except OSError:
                    pass
            if msg.get("workdir"):
                _rmtree(msg["workdir"])
            self.send({"op": "reaped", "n": n})
        elif op == "exit":
            os._exit(0)

    def _episode_root(self, kid: int) -> None:
        """In the forked child of the template: become the episode's root, start its kernel, wait for close."""
        self.sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the root reaps (and so can count) its children
        os.setsid()
        _subreaper()
        workdir = f"{self.cfg.get('workdir') or os.getcwd()}/e{kid}"
        os.mkdir(workdir, 0o700)
        os.chdir(workdir)
        os.environ["HOME"] = os.environ["TMPDIR"] = workdir
        if self._episode_filter is not None:
            self._episode_filter()
        self.template = False
        self._connect(kid, "root")
        root_sock = self.sock
        pid = os.fork()
        if pid == 0:
            root_sock.close()
            os.setpgid(0, 0)  # kill(0, ...) in user code stays inside the episode's kernel group
            self._connect(kid)
            self.loop()
            os._exit(0)
        # root: wait for `close` (or the host going away), then end everything the episode started
        reply = False
        while True:
            try:
                m = self.recv()
            except (ChannelClosed, OSError):
                break
            if isinstance(m, dict) and m.get("op") == "close":
                reply = True
                break
        _end_episode(pid)
        _rmtree(workdir)
        if reply:
            try:
                self.send({"op": "closed"})
            except OSError:
                pass
        os._exit(0)

    def _read_capture(self, fd: int, raw: _CappedRaw) -> tuple[str, bool]:
        size = os.fstat(fd).st_size
        data = os.pread(fd, self.cap, 0) if size else b""
        total = size + raw.dropped
        text = data.decode("utf-8", "replace")
        if total > self.cap:
            text += f"\n[... output truncated: {total} bytes written, showing the first {self.cap} ...]\n"
            return text, True
        return text, False

    def run(self, code: str, soft: float) -> dict:
        import ast
        import linecache

        self.cell += 1
        fname = f"<cell {self.cell}>"
        linecache.cache[fname] = (len(code), None, code.splitlines(True), fname)
        (out_fd, err_fd), raws, (sys.stdout, sys.stderr) = self._capture or self._prepare_capture()
        self._capture = None
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        res = {"op": "result", "error": None, "value": None, "timed_out": False, "is_final": False,
               "final_answer": None}
        self.soft = soft
        t0 = time.perf_counter()
        try:
            self.in_user = True
            signal.setitimer(signal.ITIMER_REAL, max(soft, 0.001))
            tree = ast.parse(code, fname, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, fname, "exec"), self.ns)
            if last is not None:
                v = eval(compile(last, fname, "eval"), self.ns)
                if v is not None:
                    self.in_user = False
                    r = repr(v)
                    res["value"] = r if len(r) <= self.cap else r[: self.cap] + "...[repr truncated]"
            self.in_user = False
        except FinalAnswer as fa:
            self.in_user = False
            res["is_final"], res["final_answer"] = True, jsonable(fa.value)
        except SandboxTimeout as e:
            self.in_user = False
            res["timed_out"] = True
            res["error"] = f"TimeoutError: {e} (state kept)"
        except BaseException as e:  # user code errors, SyntaxError, SystemExit, KeyboardInterrupt
            self.in_user = False
            res["error"] = self._format(e)
        finally:
            self.in_user = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        if os.getpid() != self.pid:  # a child the user's code forked fell through to here: it must not answer
            os._exit(0)
        res["duration_s"] = time.perf_counter() - t0
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        res["stdout"], t1 = self._read_capture(1, raws[0])
        res["stderr"], t2 = self._read_capture(2, raws[1])
        res["truncated"] = t1 or t2
        os.dup2(self.devnull, 1)
        os.dup2(self.devnull, 2)
        os.close(out_fd)
        os.close(err_fd)
        return res

    def _prepare_capture(self):
        """Fresh memfds and stream objects for one run (fresh, so output a lingering child writes later never
        lands in another run's result). Built after each run, while the kernel waits for the next message."""
        fds = (os.memfd_create("stdout"), os.memfd_create("stderr"))
        raws = (_CappedRaw(1, self.cap + 1), _CappedRaw(2, self.cap + 1))
        streams = tuple(io.TextIOWrapper(io.BufferedWriter(r), encoding="utf-8", errors="backslashreplace",
                                         line_buffering=True) for r in raws)
        return fds, raws, streams

    def _drop_capture(self):
        if self._capture is not None:
            for fd in self._capture[0]:
                os.close(fd)
            self._capture = None

    @staticmethod
    def _format(e: BaseException) -> str:
        import traceback

        try:
            if isinstance(e, SyntaxError):
                return "".join(traceback.format_exception_only(type(e), e)).rstrip()
            frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.startswith("<cell")]
            lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] if frames else []
            lines += traceback.format_exception_only(type(e), e)
            return "".join(lines).rstrip()
        except BaseException:
            return f"{type(e).__name__}: <error while formatting the exception>"


def _apply_limits(cfg: dict) -> None:
    import resource

    for name, value in (cfg.get("rlimits") or {}).items():
        res = getattr(resource, name, None)
        if res is None or value is None:
            continue
        try:
            resource.setrlimit(res, (int(value), int(value)))
        except (ValueError, OSError):
            pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-long writes fail with EFBIG instead of killing


def _drop_privileges(cfg: dict) -> None:
    uid, gid = cfg.get("uid"), cfg.get("gid")
    if os.geteuid() == 0 and uid is not None:
        os.setgroups([])
        os.setgid(int(gid if gid is not None else uid))
        os.setuid(int(uid))
    if os.geteuid() == 0 and not cfg.get("allow_root"):
        raise SystemExit("agentkd worker refuses to run user code as root")


MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
PIVOT_ROOT_NR = {"x86_64": 155, "aarch64": 41}


def _mount(src, dst, fstype, flags, data=None) -> None:
    import ctypes

    enc = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
    if _libc().mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} on {dst}: {os.strerror(err)}")


def _setup_fs(ops: list) -> None:
    """Build and enter a new root (the `unshare` backend; we are root in a private mount namespace).

    ops: ["root", hostdir] first (a new tmpfs is mounted there), or ["base", hostdir] (a root prepared ahead
    by the fork server, `_prepare_root`: only the ops it left out follow); then ["ro"|"rw", src, dst],
    ["symlink", target, dst], ["tmpfs", dst, size, mode], ["dir", dst], ["proc", dst], ["dev", dst]; dst
    paths are inside the new root."""
    import platform

    root = ops[0][1]
    if ops[0][0] == "root":
        _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    _build_fs(root, ops[1:])
    os.chdir(root)
    nr = PIVOT_ROOT_NR.get(platform.machine())
    libc = _libc()
    if nr is not None and libc.syscall(nr, b".", b".") == 0:
        libc.umount2(b".", 2)  # MNT_DETACH: the old root disappears from this namespace
    else:
        os.chroot(".")
    os.chdir("/")


def _build_fs(root: str, ops: list) -> None:
    """Carry out the mount operations `ops` under `root` (see `_setup_fs`)."""
    for op in ops:
        kind, dst = op[0], root + op[-1] if op[0] in ("ro", "rw", "symlink") else root + op[1]
        if kind in ("ro", "rw"):
            if os.path.isdir(op[1]):
                os.makedirs(dst, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                open(dst, "a").close()
            _mount(op[1], dst, None, MS_BIND | MS_REC)
            flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if kind == "ro" else 0)
            _mount(None, dst, None, flags)
        elif kind == "symlink":
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(op[1], dst)
        elif kind == "dir":
            os.makedirs(dst, exist_ok=True)
            os.chmod(dst, 0o755)
        elif kind == "tmpfs":
            os.makedirs(dst, exist_ok=True)
            _mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, f"size={op[2]},mode={op[3]}")
        elif kind == "proc":
            os.makedirs(dst, exist_ok=True)
            _mount("proc", dst, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        elif kind == "dev":
            os.makedirs(dst, exist_ok=True)
            _mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755")
            for node in ("null", "zero", "random", "urandom", "full"):
                open(f"{dst}/{node}", "a").close()
                _mount(f"/dev/{node}", f"{dst}/{node}", None, MS_BIND)
            for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                                 ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
                os.symlink(target, f"{dst}/{name}")


OWN_FS_OPS = ("tmpfs", "proc", "rw")  # what each sandbox mounts itself: its /work and /tmp, /proc, socket folder


def split_fs(ops: list) -> tuple[list, list]:
    """(the part of the mount operations `ops` (without the root op) that is the same for every sandbox of a
    config, with an empty folder in place of each of its own mounts; the operations of those own mounts)."""
    shared, own = [], []
    for op in ops:
        if op[0] in OWN_FS_OPS:
            own.append(list(op))
            shared.append(["dir", op[-1] if op[0] == "rw" else op[1]])
        else:
            shared.append(list(op))
    return shared, own


_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _seccomp_loader(prog: bytes):
    """A function that loads the raw BPF program `prog` (agentkd.sandbox.seccomp) for the calling process and
    all it starts (built ahead, so that a template can load it cheaply in every episode)."""
    import ctypes

    libc = _libc()

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))

    def load() -> None:
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
        if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            raise OSError(ctypes.get_errno(), "installing the seccomp filter failed")

    load.keep = (buf, fprog)  # type: ignore[attr-defined]
    return load


def _install_seccomp(prog: bytes) -> None:
    """Load a raw BPF program (agentkd.sandbox.seccomp) for this process and all it starts."""
    _seccomp_loader(prog)()


def _subreaper() -> None:
    try:
        _libc().prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def main(argv: list[str]) -> None:
    cfg = json.loads(argv[1])
    token = os.environ.pop("AGENTKD_TOKEN", "")
    if cfg.get("go_fd") is not None:  # wait until the host has put this process into its cgroup
        if os.read(cfg["go_fd"], 1) != b"g":
            raise SystemExit("agentkd worker: the host did not confirm the sandbox's cgroup")
        os.close(cfg["go_fd"])
    serve(cfg, token)


def _sched_batch() -> None:
    """Schedule this process (and what it forks) as SCHED_BATCH: the same share of the CPU, but a sandbox
    woken by a message never preempts the running process that woke it (the host's event loop, which many
    episodes wait on); it runs on a free CPU, or when the loop sleeps or its slice ends."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or a policy the container forbids: keep the default
        pass


def serve(cfg: dict, token: str, after_drop=None) -> None:
    """The sandbox's start sequence once cfg and token are known (every local backend, and the forkserver's
    forked sandboxes): batch scheduling, build the root, apply limits, drop privileges (then `after_drop()`),
    load seccomp, fork kernel 0 and stay as the launcher that reaps orphans. Never returns."""
    _sched_batch()
    if cfg.get("fs"):
        _setup_fs(cfg["fs"])
    _apply_limits(cfg)
    _drop_privileges(cfg)
    if after_drop is not None:
        after_drop()
    if cfg.get("seccomp"):
        _install_seccomp(bytes.fromhex(cfg["seccomp"]))
    sys.path[:0] = [p for p in cfg.get("paths", []) if p not in sys.path]
    if cfg.get("workdir"):
        os.chdir(cfg["workdir"])
    if os.getpid() != 1:
        _subreaper()
    pid = os.fork()
    if pid == 0:
        try:
            Kernel(cfg, token, 0).loop()
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        os._exit(1)
    # launcher: reap every child until none is left, then leave (ending the sandbox).
    while True:
        try:
            os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue


# -- fork server: the forkserver backend's zygote ---------------------------------------------------------
# A pristine, pre-imported worker that never runs user code and holds no secrets (its memory is what every
# sandbox starts from). For each ``spawn`` request (host -> server: {"op": "spawn"} with two fds: the write
# end of the sandbox's stderr pipe and the read end of a pipe that carries the sandbox's cfg) it forks the
# sandbox's first process straight into a new pid namespace (setns back to its own, unshare(CLONE_NEWPID),
# fork) and answers {"pid": PID} with a pidfd of it. That process is pid 1 of its namespace: it joins the
# sandbox's cgroup, unshares mount/net/ipc/uts namespaces and runs `serve(cfg, token)` exactly like the
# unshare backend's worker. The cfg and token travel over the sandbox's own pipe, so they never enter the
# server's memory (which a sandbox forked later would inherit). Killing pid 1 kills the namespace, and
# waiting on its pidfd returns only once every process in it is gone. The server exits when the host's
# end of its socket closes; its sandboxes die with it (parent-death signal).
# Prepared roots: the server runs in a mount namespace of its own (a slave of the host's: host mounts
# propagate in, nothing flows out). A spawn request may carry the host folder of the sandbox's root and the
# shared part of its mount plan ({"root", "base"}, `split_fs`); the server then builds that part once, at
# ROOT/N under a private tmpfs on ROOT (the host sees ROOT empty), with its top tmpfs made read-only. Each
# sandbox's unshare(CLONE_NEWNS) copies those mounts (read-only flags included) and makes them private; it
# mounts only its own tmpfs /work and /tmp, /proc and socket folder there and pivots into it (`_own_fs`).

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000, 0x04000000, 0x08000000, 0x20000000, 0x40000000)
MS_PRIVATE, MS_SLAVE = 1 << 18, 1 << 19
PR_SET_PDEATHSIG = 1
MAX_PREPARED = 8
_stages: dict[str, bool] = {}  # host folder -> a private tmpfs is mounted on it (in the server's mount namespace)
_prepared: dict[str, str | None] = {}  # (host folder, shared ops) as JSON -> the root prepared for them (None: failed)


def _die_with_parent(parent_pidfd: int) -> None:
    """SIGKILL this process when its parent exits; exit now if it already has (its pidfd is readable)."""
    import select

    if _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or select.select([parent_pidfd], [], [], 0)[0]:
        os._exit(1)


def _unshare(flags: int, private_mounts: bool = False) -> None:
    import ctypes

    libc = _libc()
    if libc.unshare(flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    if private_mounts and libc.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"making / private: {os.strerror(err)}")


def _reap_children(*_args) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def forkserver_main(argv: list[str]) -> None:
    """Run the fork server. argv[1]: JSON {"fd": its socket, "parent": host pid, "pdeathsig": bool}."""
    boot = json.loads(argv[1])
    if boot.get("pdeathsig"):
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != boot["parent"]:
            os._exit(1)
    import socket

    sock = socket.socket(fileno=boot["fd"])
    _sched_batch()  # the server's forks and the sandboxes' start-up never preempt the host either
    try:
        # everything a sandbox needs before and during its first run, imported once here
        import _socket  # noqa: F401
        import ast  # noqa: F401
        import ctypes  # noqa: F401
        import linecache  # noqa: F401
        import platform
        import resource  # noqa: F401
        import select  # noqa: F401
        import traceback  # noqa: F401

        platform.machine()  # cached: _setup_fs asks for it
        _libc()
        me = os.pidfd_open(os.getpid())  # inherited by the sandboxes: readable once the server is gone
        own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
        pid = _fork_into_new_pid_namespace(own_pidns)  # probe: can this host make the namespaces?
        if pid == 0:
            try:
                _unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS, private_mounts=True)
                os._exit(0 if os.getpid() == 1 else 1)
            except BaseException as e:
                os.write(2, f"{e}\n".encode())
                os._exit(1)
        status = os.waitpid(pid, 0)[1]
        if status != 0:
            raise OSError(f"cannot create the sandbox namespaces here (status {status})")
        try:  # a mount namespace of its own, for the roots it prepares (host mounts still propagate in)
            _unshare(CLONE_NEWNS)
            _mount("none", "/", None, MS_REC | MS_SLAVE)
            _stages[""] = True
        except OSError:
            pass  # no prepared roots: each sandbox builds its own
    except BaseException as e:
        sock.sendall(encode({"op": "error", "error": f"{type(e).__name__}: {e}"}))
        os._exit(1)
    signal.signal(signal.SIGCHLD, _reap_children)
    import gc

    gc.collect()
    gc.freeze()  # the cyclic GC leaves these objects alone in the sandboxes: fewer copy-on-write faults
    sock.sendall(encode({"op": "ready", "pid": os.getpid()}))
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 2)
    os.close(null)
    while True:
        _reap_children()
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, 4096, 4)
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)  # the host is gone (or closed us): every sandbox dies with this process
        try:
            (n,) = HDR.unpack(data[:4])
            while len(data) < 4 + n:
                more = sock.recv(4 + n - len(data))
                if not more:
                    os._exit(0)
                data += more
            req = json.loads(data[4:4 + n])
            op = req.get("op")
        except (ValueError, struct.error, AttributeError):
            req, op = {}, None
        if op != "spawn" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            sock.sendall(encode({"error": f"bad request {op!r} with {len(fds)} fds"}))
            continue
        base = _prepared_root(req.get("root"), req.get("base"))
        # SIGCHLD stays blocked until the pidfd is open: the child cannot be reaped (and its pid reused) before
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = _fork_into_new_pid_namespace(own_pidns)
            if pid == 0:
                _sandbox_init(sock, fds, me, base)
            pidfd = os.pidfd_open(pid)
        except OSError as e:
            sock.sendall(encode({"error": f"fork failed: {e}"}))
            continue
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            for fd in fds:
                os.close(fd)
        try:
            socket.send_fds(sock, [encode({"pid": pid})], [pidfd])
        except OSError:
            os._exit(0)
        finally:
            os.close(pidfd)


def _fork_into_new_pid_namespace(own_pidns: int) -> int:
    """fork(), the child being pid 1 of a new pid namespace (the caller's own namespace is unchanged)."""
    import ctypes

    if _libc().setns(own_pidns, CLONE_NEWPID) != 0:  # undo the previous unshare: one new namespace per child
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")
    _unshare(CLONE_NEWPID)
    return os.fork()


def _prepared_root(root, shared) -> tuple[str, list, str] | None:
    """(root, shared, the prepared root) for a spawn request that names the host folder `root` and the shared
    part of its mount plan (`split_fs`): the read-only root is built once per such pair, in the server's own
    mount namespace (where the host never sees it), as a tree under a private tmpfs mounted on `root`."""
    if not _stages.get("") or not isinstance(root, str) or not root.startswith("/") or not isinstance(shared, list):
        return None
    key = json.dumps([root, shared])
    if key not in _prepared and len(_prepared) < MAX_PREPARED:
        if root not in _stages:
            try:
                _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700")
                _stages[root] = True
            except OSError:
                _stages[root] = False
        _prepared[key] = _prepare_root(f"{root}/{len(_prepared)}", shared) if _stages[root] else None
    path = _prepared.get(key)
    return (root, shared, path) if path else None


def _prepare_root(path: str, shared: list) -> str | None:
    """Build the shared part of a sandbox root at `path` (a new folder); its top tmpfs is then made read-only:
    every sandbox only mounts on the empty folders left for its own mounts. None if it fails."""
    try:
        os.mkdir(path, 0o755)
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    except OSError:
        return None
    try:
        _build_fs(path, shared)
        _mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        return path
    except OSError:
        _libc().umount2(path.encode(), 2)  # MNT_DETACH: with everything mounted below it
        return None


def _own_fs(fs: list, base: tuple[str, list, str] | None) -> list:
    """A sandbox's mount plan `fs`, reduced to its own mounts on top of the prepared root when that root was
    prepared for exactly this plan (same host folder, same shared part); else `fs` as it is."""
    if base is None or not fs or list(fs[0]) != ["root", base[0]]:
        return fs
    shared, own = split_fs(fs[1:])
    return [["base", base[2]], *own] if shared == base[1] else fs


def _sandbox_init(sock, fds: list[int], server_pidfd: int, base: tuple[str, list, str] | None = None) -> None:
    """The sandbox's first process, pid 1 of its pid namespace (see above); `base`: the root prepared for it
    (`_prepared_root`), if any. Never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        sock.detach()
        err_w, cfg_r = fds
        os.dup2(err_w, 2)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        chunks = []
        while True:
            chunk = os.read(cfg_r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        alive = os.dup2(server_pidfd, 3)
        os.closerange(4, 1 << 30)  # the server's socket and every other inherited fd
        os.setsid()
        _die_with_parent(alive)
        req = json.loads(b"".join(chunks)[4:])
        me = str(os.getpid()).encode()
        for path in req.get("cgroup_procs") or ():  # before any fork: all the sandbox starts is inside
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, me)
            finally:
                os.close(fd)
        _unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS, private_mounts=True)

        def rearm() -> None:  # setuid cleared the parent-death signal: set it again (exit if the server is gone)
            _die_with_parent(alive)
            os.close(alive)

        cfg = req["cfg"]
        if cfg.get("fs"):
            cfg["fs"] = _own_fs(cfg["fs"], base)
        serve(cfg, req.get("token", ""), rearm)
    except BaseException:
        try:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(1)


if __name__ == "__main__":
    main(sys.argv)
