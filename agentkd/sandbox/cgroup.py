"""Per-sandbox cgroups (v2 unified or v1 memory+pids) limiting a whole process tree; best effort.

`Cgroup.create(...)` returns None when no writable hierarchy exists (then the worker's per-process
RLIMIT_AS is the only memory limit). `join()` is called in the child before exec so every process the
sandbox ever starts is inside; `kill()` SIGKILLs everything still inside (e.g. `setsid` daemons).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

from agentkd.sandbox.worker import signal_all

ROOT = Path("/sys/fs/cgroup")


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


class Cgroup:
    def __init__(self, dirs: list[Path], limits: dict[str, bool]):
        self.dirs = dirs
        self.limits = limits  # {"memory": bool, "pids": bool}

    @classmethod
    def create(cls, memory_mb: int, max_procs: int, name: str | None = None) -> Cgroup | None:
        if not _swept:
            _swept.append(True)
            sweep_stale()
        name = name or f"sb-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        mem = memory_mb * 1024 * 1024
        if (ROOT / "cgroup.controllers").exists():  # v2
            parent = ROOT / "agentkd"
            try:
                parent.mkdir(exist_ok=True)
                _write(ROOT / "cgroup.subtree_control", "+memory +pids")
                _write(parent / "cgroup.subtree_control", "+memory +pids")
                d = parent / name
                d.mkdir()
            except OSError:
                return None
            ok_mem = _write(d / "memory.max", str(mem))
            _write(d / "memory.swap.max", "0")
            ok_pids = _write(d / "pids.max", str(max_procs))
            if not (ok_mem or ok_pids):
                cls([d], {}).remove()
                return None
            return cls([d], {"memory": ok_mem, "pids": ok_pids})
        dirs, limits = [], {}
        for ctrl, files in (("memory", [("memory.limit_in_bytes", mem), ("memory.memsw.limit_in_bytes", mem)]),
                            ("pids", [("pids.max", max_procs)])):
            base = ROOT / ctrl
            if not base.is_dir():
                continue
            d = base / "agentkd" / name
            try:
                d.mkdir(parents=True)
            except OSError:
                continue
            ok = _write(d / files[0][0], str(files[0][1]))
            for f, v in files[1:]:
                _write(d / f, str(v))
            if ok:
                dirs.append(d)
                limits[ctrl] = True
            else:
                _rmdir(d)
        return cls(dirs, limits) if dirs else None

    def join(self, pid: int = 0) -> None:
        """Move `pid` (0 = the calling process) into every hierarchy; safe in a preexec_fn."""
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write(str(pid or os.getpid()))

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            try:
                out |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return out

    def oom_killed(self) -> bool:
        for d in self.dirs:
            for f, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
                try:
                    for line in (d / f).read_text().splitlines():
                        k, _, v = line.partition(" ")
                        if k == key and int(v) > 0:
                            return True
                except (OSError, ValueError):
                    pass
        return False

    def signal(self) -> bool:
        """SIGKILL everything inside now, without waiting; whether anything was still inside."""
        left = self.pids()
        signal_all(left, signal.SIGKILL)
        return bool(left)

    def kill(self, timeout: float = 2.0) -> None:
        for d in self.dirs:
            _write(d / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout
        pause = 0.0005  # killed processes usually leave within a millisecond or two: poll fast, then back off
        while time.monotonic() < deadline and self.signal():
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def remove(self) -> None:
        self.kill()
        for d in self.dirs:
            _rmdir(d)


def _limit(path: Path) -> int | None:
    """A cgroup limit file's value; None for "max", a v1 "unlimited" (~2**63) or a missing file."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) < 1 << 62 else None


def _paths(pid: int) -> list[tuple[str, str]] | None:
    try:
        return [tuple(line.split(":", 2)[1:]) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    except (OSError, ValueError):
        return None


def limits_of(pid: int) -> dict[str, int | None] | None:
    """{"memory": bytes, "pids": count}: the limits of the cgroups process `pid` is in, as this host sees them
    (None: no limit there), counting only cgroups other than this process's own (a sandbox left in the host's
    cgroup has no limit of its own). None when its /proc/PID/cgroup cannot be read."""
    theirs, ours = _paths(pid), _paths(os.getpid()) or []
    if theirs is None:
        return None
    v2 = (ROOT / "cgroup.controllers").exists()
    found: dict[str, int | None] = {"memory": None, "pids": None}
    for ctrls, path in theirs:
        if (ctrls, path) in ours:
            continue
        names = ctrls.split(",")
        for kind, d, file in (("memory", ROOT / "memory", "memory.limit_in_bytes"), ("pids", ROOT / "pids", "pids.max"),
                              ("memory", ROOT, "memory.max"), ("pids", ROOT, "pids.max")):
            if (ctrls == "" and v2 and d == ROOT) or (d != ROOT and kind in names):
                v = _limit(d / path.lstrip("/") / file)
                if v is not None:
                    found[kind] = v
    return found


_swept: list[bool] = []


def sweep_stale() -> int:
    """Remove the empty sandbox cgroups of agentkd processes that died without cleaning up (killed with
    SIGKILL, say): their names carry the creating process's pid. Returns how many were removed."""
    removed = 0
    for parent in (ROOT / "agentkd", ROOT / "memory" / "agentkd", ROOT / "pids" / "agentkd"):
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for d in entries:
            parts = d.name.split("-")
            if len(parts) != 3 or parts[0] != "sb" or not parts[1].isdigit() or _alive(int(parts[1])):
                continue
            try:
                d.rmdir()  # fails (and is left alone) while any process is still inside
                removed += 1
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _rmdir(d: Path) -> None:
    for _ in range(50):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
