"""The filesystem a local sandbox (bwrap, unshare) sees, as a backend-neutral list of mount operations.

Read-only: the system folders, a few /etc files the dynamic loader and Python need, the interpreter's
prefix, the host site-packages holding numpy/sympy (at /opt/agentkd/siteN), and the worker. Writable:
tmpfs /work (the private work dir) and /tmp, and the worker's socket folder at /run/agentkd. Nothing else
of the host exists inside: no home folders, no repository, no /etc/shadow.

Operations (destination paths are inside the sandbox): ("ro"|"rw", src, dst), ("symlink", target, dst),
("tmpfs", dst, size_bytes, mode), ("dir", dst), ("proc", dst), ("dev", dst).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from agentkd.sandbox.backends.base import WORKER_DIR_IN, host_python, site_paths, worker_mounts

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
             "/etc/ssl/certs")
SOCKET_DIR = "/run/agentkd"
WORKDIR = "/work"


def interpreter(config) -> tuple[str, list[str], list[str]]:
    """(interpreter, host site-packages to mount at /opt/agentkd/siteN, host folders to mount as they are)."""
    if config.python:
        exe = os.path.realpath(shutil.which(config.python) or config.python)
        return exe, [], [str(Path(exe).parent.parent)]
    return host_python(), site_paths(), [os.path.realpath(sys.base_prefix)]


def _under_system_dir(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS
               if os.path.isdir(d) and not os.path.islink(d))


def plan(config, socket_dir: str) -> tuple[str, list[tuple], list[str]]:
    """(interpreter, mount operations, sys.path entries inside the sandbox)."""
    exe, site, binds = interpreter(config)
    mb = 1024 * 1024
    ops: list[tuple] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            ops.append(("symlink", os.readlink(d), d))
        elif os.path.isdir(d):
            ops.append(("ro", d, d))
    ops += [("ro", f, f) for f in ETC_FILES if os.path.exists(f)]
    for b in [*binds, *config.extra_ro_paths]:
        b = os.path.realpath(b)
        if os.path.exists(b) and not _under_system_dir(b):
            ops.append(("ro", b, b))
    ops += [("proc", "/proc"), ("dev", "/dev"), ("tmpfs", "/tmp", 64 * mb, "1777"),
            ("tmpfs", WORKDIR, config.work_dir_mb * mb, "0777"), ("dir", "/opt"), ("dir", WORKER_DIR_IN),
            ("dir", f"{WORKER_DIR_IN}/__pycache__")]
    ops += [("ro", src, dst) for src, dst in worker_mounts()]
    ops += [("ro", p, f"{WORKER_DIR_IN}/site{i}") for i, p in enumerate(site)]
    ops += [("dir", "/run"), ("rw", socket_dir, SOCKET_DIR)]
    return exe, ops, [f"{WORKER_DIR_IN}/site{i}" for i in range(len(site))]


def bwrap_args(ops: list[tuple]) -> list[str]:
    """The same plan as bubblewrap options (parent folders created 0755, in order)."""
    args: list[str] = []
    made = {"/"}

    def parents(dst: str) -> None:
        for p in list(Path(dst).parents)[::-1]:
            if str(p) not in made:
                args.extend(["--perms", "0755", "--dir", str(p)])
                made.add(str(p))

    for op in ops:
        kind, dst = op[0], op[-1] if op[0] in ("ro", "rw", "symlink") else op[1]
        parents(dst)
        made.add(dst)
        if kind == "ro":
            args += ["--ro-bind", op[1], dst]
        elif kind == "rw":
            args += ["--bind", op[1], dst]
        elif kind == "symlink":
            args += ["--symlink", op[1], dst]
        elif kind == "tmpfs":
            args += ["--perms", op[3], "--size", str(op[2]), "--tmpfs", dst]
        elif kind == "dir":
            args += ["--perms", "0755", "--dir", dst]
        elif kind == "proc":
            args += ["--proc", dst]
        elif kind == "dev":
            args += ["--dev", dst]
    return args
