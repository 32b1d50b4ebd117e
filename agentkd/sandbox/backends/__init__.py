"""Sandbox backends: each starts the same worker (`agentkd/sandbox/worker.py`) behind a different wall."""

from __future__ import annotations

from agentkd.sandbox.backends.base import Backend


def backend_class(name: str) -> type[Backend]:
    if name == "bwrap":
        from agentkd.sandbox.backends.bwrap import BwrapBackend

        return BwrapBackend
    if name == "docker":
        from agentkd.sandbox.backends.docker import DockerBackend

        return DockerBackend
    if name == "unshare":
        from agentkd.sandbox.backends.unshare import UnshareBackend

        return UnshareBackend
    if name == "forkserver":
        from agentkd.sandbox.backends.forkserver import ForkserverBackend

        return ForkserverBackend
    if name == "subprocess":
        from agentkd.sandbox.backends.subprocess import SubprocessBackend

        return SubprocessBackend
    raise ValueError(f"unknown sandbox backend {name!r}")


AUTO_ORDER = ("docker", "forkserver", "bwrap", "unshare", "subprocess")
