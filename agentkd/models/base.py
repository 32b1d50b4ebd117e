"""The one chat-model interface that teachers, students and judges use.

    completions = await model.generate(messages, n=4, temperature=0.7, stop=["<end_code>"], prefill="Thought:")

`prefill` is text the assistant's reply must start with; the returned `Completion.text` is the
continuation only (callers that log the whole turn prepend `prefill` themselves). Providers that cannot
prefill raise `PrefillNotSupported`; see `ChatModel.supports_prefill`.

Behaviour such as caching, budgets, retries and rate limits is added by wrapping one model in another
(`WrappedModel`), never by flags passed through callers.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentkd.core.errors import EXIT_FATAL, AgentkdError

Message = dict[str, Any]  # OpenAI chat format: {"role": ..., "content": ...}
FinishReason = Literal["stop", "length", "error"]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(BaseModel):
    text: str = Field(description="Generated text (continuation after any prefill), stop sequence excluded.")
    finish_reason: FinishReason | str = "stop"
    usage: Usage = Field(default_factory=Usage, description="Tokens of the request (prompt counted on each choice).")
    cost_usd: float = Field(default=0.0, description="Cost attributed to this completion.")
    logprobs: list[float] | None = None
    cached: bool = Field(default=False, description="True when served from a request cache.")


class ModelError(Exception):
    """A model call failed. `retryable` tells wrappers whether trying again can help; `kind` names the
    cause for counters ("429", "500", "timeout", "connection", "malformed", ...)."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None,
                 status: int | None = None, kind: str | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.kind = kind or (str(status) if status else type(self).__name__)


class PrefillNotSupported(ModelError):
    pass


class FatalModelError(ModelError, AgentkdError):
    """A model failure no retry can fix: missing or rejected credentials (401/403), an unknown model (404),
    a bad request (400, context length exceeded), a server that is not there. The run stops at once; the
    message names the provider, the model and what to do."""

    exit_code = EXIT_FATAL

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message, retryable=False, status=status)


class ChatModel(abc.ABC):
    """Async chat completion. Subclasses implement `_generate`."""

    name: str = "model"
    provider: str = "base"
    supports_prefill: bool = True

    async def generate(
        self,
        messages: Sequence[Message],
        *,
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        prefill: str | None = None,
    ) -> list[Completion]:
        if n < 1:
            raise ValueError("n must be >= 1")
        if prefill and not self.supports_prefill:
            raise PrefillNotSupported(f"{self.name} ({self.provider}) cannot prefill the assistant turn")
        return await self._generate(
            list(messages), n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
            stop=list(stop) if stop else None, seed=seed, prefill=prefill or None,
        )

    @abc.abstractmethod
    async def _generate(
        self, messages: list[Message], *, n: int, temperature: float | None, top_p: float | None,
        max_tokens: int | None, stop: list[str] | None, seed: int | None, prefill: str | None,
    ) -> list[Completion]: ...

    def describe(self) -> dict[str, Any]:
        """Provenance fields for trajectories."""
        return {"model": self.name, "provider": self.provider}

    async def aclose(self) -> None:
        return None


class WrappedModel(ChatModel):
    """Base for wrappers (cache, budget, retry, rate limit): forwards everything to `inner`, calling its
    public `generate` (so a wrapper works around any `ChatModel`, not just around other wrappers)."""

    def __init__(self, inner: ChatModel):
        self.inner = inner

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def provider(self) -> str:  # type: ignore[override]
        return self.inner.provider

    @property
    def supports_prefill(self) -> bool:  # type: ignore[override]
        return self.inner.supports_prefill

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    async def _generate(self, messages, **kw):  # type: ignore[override]
        return await self.inner.generate(messages, **kw)

    async def aclose(self) -> None:
        await self.inner.aclose()


def truncate_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """Cut `text` at the earliest stop sequence (excluded). Returns (text, stopped)."""
    if not stop:
        return text, False
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
