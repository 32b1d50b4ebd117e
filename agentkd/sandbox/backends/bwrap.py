"""bubblewrap backend: new mount/pid/net/ipc/uts namespaces, a read-only system, a tmpfs work dir,
a seccomp filter, a per-sandbox cgroup, and (when agentkd runs as root) a drop to a non-root uid.

As root, bwrap runs privileged without a user namespace and keeps only CAP_SETUID/CAP_SETGID, which the
worker spends at once on `setuid(config.uid)`: the code then runs as a real unprivileged host uid (a user
namespace mapping the sandbox uid to host root would let it read root-owned files it can see). As a normal
user, bwrap adds a user namespace and the code runs as that user, seeing only the mounted system folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from agentkd.sandbox.backends import mounts
from agentkd.sandbox.backends.base import (
    SANDBOX_ENV,
    LocalProcessBackend,
    worker_command,
)
from agentkd.sandbox.cgroup import Cgroup

_probe: dict[str, str | None] = {}  # whether bwrap works here, checked once per process


class BwrapBackend(LocalProcessBackend):
    name = "bwrap"

    @classmethod
    def unavailable(cls, config) -> str | None:
        if "bwrap" not in _probe:
            _probe["bwrap"] = cls._probe()
        return _probe["bwrap"]

    @staticmethod
    def _probe() -> str | None:
        exe = shutil.which("bwrap")
        if not exe:
            return "bubblewrap (bwrap) is not installed"
        try:
            r = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid",
                                *([] if os.geteuid() == 0 else ["--unshare-user"]), "true"],
                               capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bwrap failed to run: {e}"
        if r.returncode != 0:
            return f"bwrap cannot create namespaces here: {r.stderr.decode(errors='replace').strip()}"
        return None

    def command(self, worker_cfg: dict, token: str, extra: list[str]) -> list[str]:
        c = self.config
        root = os.geteuid() == 0
        exe, ops, paths = mounts.plan(c, self.socket_dir)
        # --as-pid-1: the worker's launcher is the namespace's init, so it reaps (and keeps) every orphan,
        # including a committed candidate whose parent exited; when it exits, the kernel kills the rest.
        args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--new-session", "--as-pid-1"]
        if root:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            args += ["--unshare-user", "--disable-userns"]
        args += [*mounts.bwrap_args(ops), "--chdir", mounts.WORKDIR, "--clearenv"]
        for k, v in {**SANDBOX_ENV, "AGENTKD_TOKEN": token}.items():
            args += ["--setenv", k, v]
        args += extra
        cfg = {**worker_cfg, "socket": f"{mounts.SOCKET_DIR}/ctl.sock", "workdir": mounts.WORKDIR,
               "paths": paths + worker_cfg.get("paths", []),
               "uid": c.uid if root else None, "gid": c.gid if root else None, "allow_root": False}
        return [*args, "--", *worker_command(exe, cfg)]

    def start(self, worker_cfg: dict, token: str) -> None:
        """Launch bwrap. With a cgroup, the sandbox's first process is moved into it while Python starts up
        (a cgroup-v1 move can take ~15 ms): bwrap reports that process's pid on --info-fd, and the worker
        waits on a pipe ("go") before it applies limits, drops privileges or forks anything."""
        from agentkd.sandbox import seccomp

        self.cgroup = Cgroup.create(*self.tree_limits())
        cg_limits = self.cgroup.limits if self.cgroup else {}
        worker_cfg = {**worker_cfg, "rlimits": self.rlimits(cg_limits)}
        keep: list[int] = []  # our copies of the fds the child inherits; closed once it started
        extra: list[str] = []
        prog = seccomp.build()
        if prog is not None:
            rfd, wfd = os.pipe()
            os.write(wfd, prog)
            os.close(wfd)
            keep.append(rfd)
            extra += ["--seccomp", str(rfd)]
        info_r = go_w = None
        if self.cgroup is not None:
            info_r, info_w = os.pipe()
            go_r, go_w = os.pipe()
            keep += [info_w, go_r]
            extra += ["--info-fd", str(info_w)]
            worker_cfg["go_fd"] = go_r
        cmd = self.command(worker_cfg, token, extra)
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, pass_fds=tuple(keep))
        finally:
            for fd in keep:
                os.close(fd)
        if self.cgroup is None:
            return
        try:
            with os.fdopen(info_r, "rb") as f:
                info = json.loads(f.read().decode() or "{}")  # EOF once bwrap wrote it (or died)
            child = int(info["child-pid"])
            self.cgroup.join(child)
            os.write(go_w, b"g")
        except (OSError, ValueError, KeyError):
            pass  # bwrap failed: the start-up error surfaces through diagnostics()
        finally:
            os.close(go_w)
