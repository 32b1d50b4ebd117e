"""unshare backend (util-linux `unshare`), for machines without bubblewrap: new mount/pid/net/ipc/uts
namespaces; the worker itself builds the same read-only root as the bwrap backend (`mounts.plan`),
pivots into it, applies rlimits, drops to the sandbox uid and loads the same seccomp filter, before it
runs anything. The per-sandbox cgroup is joined before exec. As a normal user a user namespace is added
and the code runs as that user.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile

from agentkd.sandbox.backends import mounts
from agentkd.sandbox.backends.base import (
    SANDBOX_ENV,
    WORKER_PY,
    LocalProcessBackend,
    worker_command,
)
from agentkd.sandbox.cgroup import Cgroup

_probe: dict[str, str | None] = {}  # whether unshare works here, checked once per process


class UnshareBackend(LocalProcessBackend):
    name = "unshare"

    def __init__(self, config, socket_dir, episodes: int = 1):
        super().__init__(config, socket_dir, episodes)
        self.rootdir: str | None = None

    @staticmethod
    def _flags() -> list[str]:
        flags = ["--fork", "--pid", "--mount", "--net", "--ipc", "--uts", "--propagation", "private", "--kill-child"]
        return flags if os.geteuid() == 0 else ["--user", "--map-root-user", *flags]

    @classmethod
    def unavailable(cls, config) -> str | None:
        if "unshare" not in _probe:
            _probe["unshare"] = cls._probe()
        return _probe["unshare"]

    @classmethod
    def _probe(cls) -> str | None:
        exe = shutil.which("unshare")
        if not exe:
            return "util-linux unshare is not installed"
        try:
            r = subprocess.run([exe, *cls._flags(), "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unshare failed to run: {e}"
        if r.returncode != 0:
            return f"unshare cannot create namespaces here: {r.stderr.decode(errors='replace').strip()}"
        return None

    def start(self, worker_cfg: dict, token: str) -> None:
        self.cgroup = Cgroup.create(*self.tree_limits())
        self.rootdir = tempfile.mkdtemp(prefix="agentkd-root-")
        exe, cfg, _ = namespace_worker_cfg(self, worker_cfg, self.rootdir)
        dirs = cgroup_procs(self.cgroup)

        def join_cgroup() -> None:  # between fork and exec: raw syscalls only
            pid = str(os.getpid()).encode()
            for path in dirs:
                fd = os.open(path, os.O_WRONLY)
                os.write(fd, pid)
                os.close(fd)

        # the worker is imported from its host folder, before it pivots into the new root
        boot = worker_command(exe, cfg, str(WORKER_PY.parent))
        self.proc = subprocess.Popen(["unshare", *self._flags(), "--", *boot],
                                     env={**SANDBOX_ENV, "AGENTKD_TOKEN": token}, cwd="/",
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True, preexec_fn=join_cgroup if dirs else None)

    def cleanup(self) -> None:
        if self.rootdir:
            try:
                os.rmdir(self.rootdir)
            except OSError:
                pass
            self.rootdir = None


def namespace_worker_cfg(backend: LocalProcessBackend, worker_cfg: dict, rootdir: str) -> tuple[str, dict, bool]:
    """(interpreter, worker cfg, seccomp active) for a worker that builds its own root at `rootdir` (unshare and
    forkserver backends): mount plan, seccomp filter, sandbox uid and rlimits. Call after the cgroup exists."""
    c = backend.config
    root = os.geteuid() == 0
    exe, ops, paths, prog = _plan(c.python, tuple(c.extra_ro_paths), c.work_dir_mb)
    ops = [(*op[:-2], backend.socket_dir, op[-1]) if op[0] == "rw" and op[-1] == mounts.SOCKET_DIR else op
           for op in ops]
    cfg = {**worker_cfg, "socket": f"{mounts.SOCKET_DIR}/ctl.sock", "workdir": mounts.WORKDIR,
           "paths": paths + worker_cfg.get("paths", []), "fs": [("root", rootdir), *ops],
           "seccomp": prog.hex() if prog else None,
           "uid": c.uid if root else None, "gid": c.gid if root else None,
           "allow_root": not root,  # as a normal user, "root" is that user mapped in a user namespace
           "rlimits": backend.rlimits(backend.cgroup.limits if backend.cgroup else {})}
    return exe, cfg, prog is not None


@functools.lru_cache(maxsize=16)
def _plan(python: str | None, extra_ro_paths: tuple[str, ...], work_dir_mb: int) -> tuple[str, list, list, bytes | None]:
    """`mounts.plan` (with a placeholder socket folder) and the seccomp filter, computed once per process for
    the config fields they depend on: ~0.7 ms of CPU per sandbox start otherwise (site-packages lookups)."""
    from agentkd.sandbox import seccomp
    from agentkd.sandbox.config import SandboxConfig

    c = SandboxConfig(python=python, extra_ro_paths=list(extra_ro_paths), work_dir_mb=work_dir_mb)
    exe, ops, paths = mounts.plan(c, "/nonexistent-socket-dir")
    return exe, ops, paths, seccomp.build()


def cgroup_procs(cgroup: Cgroup | None) -> list[str]:
    """The cgroup.procs files a sandbox's first process writes its pid to."""
    return [str(d / "cgroup.procs") for d in cgroup.dirs] if cgroup else []

