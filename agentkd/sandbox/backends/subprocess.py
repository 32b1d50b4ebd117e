"""subprocess backend: the worker as a plain child process. No filesystem, network or pid isolation —
only a non-root uid (when agentkd runs as root), rlimits, a cgroup when writable, and a scrubbed
environment. The work dir is a host temp folder, so `work_dir_mb` is not enforced (the isolation report
says so). Chosen by `auto` only when nothing better exists, with a loud warning.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile

from agentkd.sandbox.backends.base import (
    SANDBOX_ENV,
    WORKER_PY,
    LocalProcessBackend,
    host_python,
    site_paths,
    worker_command,
)
from agentkd.sandbox.cgroup import Cgroup

log = logging.getLogger(__name__)
_warned = False


def _reachable_by_others(path: str) -> bool:
    """Whether a process with another uid (not in the owner's group) can read `path` and its folders."""
    import stat
    from pathlib import Path

    p = Path(os.path.realpath(path))
    try:
        if not p.stat().st_mode & stat.S_IROTH:
            return False
        return all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)
    except OSError:
        return False


class SubprocessBackend(LocalProcessBackend):
    name = "subprocess"

    def __init__(self, config, socket_dir, episodes: int = 1):
        super().__init__(config, socket_dir, episodes)
        self.workdir: str | None = None

    @classmethod
    def unavailable(cls, config) -> str | None:
        if os.geteuid() != 0:
            return None
        exe = config.python or host_python()
        for path in [exe, *([] if config.python else site_paths())]:
            if not _reachable_by_others(path):
                return (f"{path} is not readable by uid {config.uid} (a parent folder is private); "
                        "set sandbox.python to a system interpreter such as /usr/bin/python3")
        return None

    def start(self, worker_cfg: dict, token: str) -> None:
        c = self.config
        root = os.geteuid() == 0
        global _warned
        if not _warned:
            _warned = True
            log.warning("agentkd sandbox: the 'subprocess' backend does NOT isolate the filesystem or network; "
                        "install bubblewrap or Docker for real isolation")
        self.cgroup = Cgroup.create(*self.tree_limits())
        self.workdir = tempfile.mkdtemp(prefix="agentkd-work-")
        if root:
            os.chown(self.workdir, c.uid, c.gid)
        cfg = {**worker_cfg, "socket": os.path.join(self.socket_dir, "ctl.sock"), "workdir": self.workdir,
               "uid": c.uid if root else None, "gid": c.gid if root else None, "allow_root": c.allow_unsafe,
               "rlimits": self.rlimits(self.cgroup.limits if self.cgroup else {}),
               "paths": ([] if c.python else site_paths()) + worker_cfg.get("paths", [])}
        env = {**SANDBOX_ENV, "HOME": self.workdir, "AGENTKD_TOKEN": token}
        dirs = [str(d / "cgroup.procs") for d in self.cgroup.dirs] if self.cgroup else []

        def preexec() -> None:
            pid = str(os.getpid()).encode()
            for path in dirs:
                fd = os.open(path, os.O_WRONLY)
                os.write(fd, pid)
                os.close(fd)

        exe = c.python or host_python()
        self.proc = subprocess.Popen(worker_command(exe, cfg, str(WORKER_PY.parent)), env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True, preexec_fn=preexec if dirs else None,
                                     cwd=self.workdir)

    def signal_tree(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, 9)  # its own session: every process it started, even after it exited

    def cleanup(self) -> None:
        import shutil

        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
