"""`ExecResult`: what one run of sandboxed code produced."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, PrivateAttr


class ExecResult(BaseModel):
    """Outcome of `Sandbox.run` (or one entry of `Sandbox.run_candidates`)."""

    stdout: str = Field(default="", description="Captured stdout (fd 1, including child processes).")
    stderr: str = Field(default="", description="Captured stderr (fd 2).")
    error: str | None = Field(default=None, description="Formatted exception (user-code frames only), or None.")
    value: str | None = Field(default=None, description="repr() of the last expression's value, if not None.")
    timed_out: bool = Field(default=False, description="The soft or hard time limit expired.")
    restarted: bool = Field(default=False, description="The worker was killed and restarted: state was lost.")
    truncated: bool = Field(default=False, description="stdout or stderr exceeded the output limit.")
    duration_s: float = Field(default=0.0, description="Wall time of the run as seen by the host.")
    is_final: bool = Field(default=False, description="The code called final_answer(...).")
    final_answer: Any = Field(default=None, description="The value passed to final_answer (JSON-serialisable).")

    _candidate: int | None = PrivateAttr(default=None)
    _generation: int | None = PrivateAttr(default=None)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out

    def observation(self, max_chars: int | None = None) -> str:
        """stdout, stderr and the error (or last value) as one text block for an agent's observation."""
        parts = [s.rstrip("\n") for s in (self.stdout, self.stderr) if s.strip()]
        if self.error:
            parts.append(self.error)
        elif self.value is not None and not self.is_final:
            parts.append(f"Out: {self.value}")
        if self.restarted:
            parts.append("[the sandbox was restarted: all variables and imports were lost]")
        text = "\n".join(parts) if parts else "[no output]"
        if max_chars is not None and len(text) > max_chars:
            text = text[:max_chars] + f"\n[... {len(text) - max_chars} more characters]"
        return text
