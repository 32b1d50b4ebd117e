"""What every backend provides, and helpers the local (bwrap, subprocess) backends share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from agentkd.sandbox.config import SandboxConfig

WORKER_PY = Path(__file__).resolve().parents[1] / "worker.py"
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class Backend:
    """Starts and kills one sandbox holding the worker. The worker connects back to `socket_dir/ctl.sock`."""

    name: ClassVar[str] = "base"

    def __init__(self, config: SandboxConfig, socket_dir: str, episodes: int = 1):
        self.config = config
        self.socket_dir = socket_dir
        # how many episodes share this sandbox (SandboxPool process mode): the whole-tree limits (memory and
        # pids cgroup, RLIMIT_NPROC fallback) are scaled by it; per-process rlimits are not
        self.episodes = episodes

    def tree_limits(self) -> tuple[int, int]:
        """(memory MB, processes) for the sandbox's whole process tree."""
        return self.config.memory_mb * self.episodes, self.config.max_procs * self.episodes

    @classmethod
    def unavailable(cls, config: SandboxConfig) -> str | None:
        """None when this backend can run here, else the reason it cannot."""
        raise NotImplementedError

    def start(self, worker_cfg: dict, token: str) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def kill_now(self) -> None:
        """SIGKILL the sandbox's processes at once, without waiting (`kill()` still waits and cleans up).
        Default: nothing; the sandbox dies in `kill()`."""

    def diagnostics(self) -> str:
        """Whatever the sandbox printed before it connected (for start-up errors)."""
        return ""

    def rlimits(self, cgroup_limits: dict[str, bool]) -> dict[str, int]:
        c = self.config
        mb = 1024 * 1024
        lim = {
            "RLIMIT_CPU": c.cpu_time_s,
            "RLIMIT_FSIZE": c.max_file_mb * mb,
            "RLIMIT_CORE": 0,
            "RLIMIT_NOFILE": 1024,
            # per-process address space: a clean MemoryError for one huge allocation; the cgroup (when
            # present) caps the whole tree.
            "RLIMIT_AS": (c.memory_mb + 1024) * mb if cgroup_limits.get("memory") else c.memory_mb * mb,
        }
        if not cgroup_limits.get("pids"):
            # RLIMIT_NPROC counts every process of the uid, not just this sandbox's: allow for those too
            uid = c.uid if os.geteuid() == 0 else os.getuid()
            lim["RLIMIT_NPROC"] = self.tree_limits()[1] + processes_of(uid)
        return lim



class LocalProcessBackend(Backend):
    """A sandbox that is one local process tree (bwrap, unshare, subprocess), optionally in a cgroup."""

    def __init__(self, config: SandboxConfig, socket_dir: str, episodes: int = 1):
        super().__init__(config, socket_dir, episodes)
        self.proc: subprocess.Popen | None = None
        self.cgroup = None  # agentkd.sandbox.cgroup.Cgroup when cgroup limits are in force

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def diagnostics(self) -> str:
        return read_pipe_nonblocking(self.proc)

    def oom_killed(self) -> bool:
        return bool(self.cgroup and self.cgroup.oom_killed())

    def signal_tree(self) -> None:
        """Kill the sandbox's process tree (default: its root process, which takes the namespace with it)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()

    def cleanup(self) -> None:
        """Remove what the backend made on the host besides the process and cgroup."""

    def kill_now(self) -> None:
        """Everything in the cgroup, and the root process, whose namespace dies with it."""
        if self.cgroup is not None:
            self.cgroup.signal()
        proc = self.proc
        if proc is not None:
            try:
                if proc.poll() is None:
                    proc.kill()
            except OSError:  # already gone
                pass

    def kill(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill()
        if self.proc is not None:
            try:
                self.signal_tree()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        self.cleanup()

def processes_of(uid: int) -> int:
    """How many processes (threads count too for RLIMIT_NPROC) run with real uid `uid` right now."""
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = os.stat(f"/proc/{d}")
            except OSError:
                continue
            if st.st_uid == uid:
                try:
                    n += len(os.listdir(f"/proc/{d}/task"))
                except OSError:
                    n += 1
    return n


WORKER_DIR_IN = "/opt/agentkd"
WORKER_BOOT = "import sys; sys.path.insert(0, {d!r}); import worker; worker.main(sys.argv)"


def worker_command(python: str, cfg: dict, worker_dir: str = WORKER_DIR_IN) -> list[str]:
    import json

    return [python, "-I", "-S", "-c", WORKER_BOOT.format(d=worker_dir), json.dumps(cfg)]


def _pyc_fresh(pyc: Path, src: Path) -> bool:
    try:
        head = pyc.read_bytes()[:16]
        st = src.stat()
    except OSError:
        return False
    import importlib.util

    return (len(head) == 16 and head[:4] == importlib.util.MAGIC_NUMBER and head[4:8] == b"\0\0\0\0"
            and int.from_bytes(head[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(head[12:16], "little") == st.st_size & 0xFFFFFFFF)


def worker_mounts(worker_dir: str = WORKER_DIR_IN) -> list[tuple[str, str]]:
    """(host path, sandbox path) pairs: worker.py and its bytecode (compiled once; saves ~5 ms per start)."""
    import importlib.util
    import py_compile

    pairs = [(str(WORKER_PY), f"{worker_dir}/worker.py")]
    name = Path(importlib.util.cache_from_source(str(WORKER_PY))).name
    candidates = [Path(importlib.util.cache_from_source(str(WORKER_PY))),
                  Path(os.environ.get("AGENTKD_CACHE", Path.home() / ".cache" / "agentkd")) / "sandbox" / name]
    for pyc in candidates:
        if not _pyc_fresh(pyc, WORKER_PY):
            try:
                pyc.parent.mkdir(parents=True, exist_ok=True)
                py_compile.compile(str(WORKER_PY), cfile=str(pyc), doraise=True)
            except (OSError, py_compile.PyCompileError):
                continue
        if _pyc_fresh(pyc, WORKER_PY):
            try:
                if pyc.stat().st_mode & 0o044 != 0o044:
                    os.chmod(pyc, 0o644)  # the sandbox uid must be able to read it
            except OSError:
                continue
            pairs.append((str(pyc), f"{worker_dir}/__pycache__/{name}"))
            break
    return pairs


def host_python() -> str:
    """The base interpreter behind this (possibly virtual) environment."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(exe)


def site_paths(modules: tuple[str, ...] = ("numpy", "sympy", "mpmath")) -> list[str]:
    """site-packages folders that hold the default sandbox packages in the host environment."""
    import importlib.util

    out: list[str] = []
    for m in modules:
        try:
            spec = importlib.util.find_spec(m)
        except (ImportError, ValueError):
            spec = None
        if spec and spec.submodule_search_locations:
            d = str(Path(next(iter(spec.submodule_search_locations))).resolve().parent)
            if d not in out:
                out.append(d)
    return out


def read_pipe_nonblocking(p: subprocess.Popen | None, limit: int = 8192) -> str:
    if p is None or p.stderr is None:
        return ""
    import select

    out = b""
    try:
        while len(out) < limit and select.select([p.stderr], [], [], 0.05)[0]:
            chunk = os.read(p.stderr.fileno(), limit)
            if not chunk:
                break
            out += chunk
    except (OSError, ValueError):
        pass
    return out.decode("utf-8", "replace")
