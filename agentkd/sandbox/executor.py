"""`CodeExecutor`: what the episode loop needs from a place that runs code.

`Sandbox`, a pool's episodes and the sandboxes a pool starts ahead (`SandboxPool.acquire_ahead`) all
satisfy it; so can a test stub. The loop calls nothing else.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Protocol, runtime_checkable

from agentkd.sandbox.result import ExecResult


@runtime_checkable
class CodeExecutor(Protocol):
    @property
    def backend(self) -> str:
        """The backend's name (recorded in each trajectory's provenance)."""
        ...

    async def arun(self, code: str, timeout_s: float | None = None, *, executor: Executor | None = None) -> ExecResult:
        """Run `code` in the episode's persistent state; never raises for problems in the code itself.
        Host-side blocking work (tool calls, starts, restarts) goes to `executor`."""
        ...
