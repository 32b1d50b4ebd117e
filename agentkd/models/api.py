"""API models through litellm: any `provider/model`, or any OpenAI-compatible server via `api_base`.

Prefill: OpenAI-compatible servers that support it (vLLM, `agentkd serve`) receive the partial assistant
message with `continue_final_message=true, add_generation_prompt=false` in the request body; Anthropic
models take a trailing assistant message natively. Elsewhere `supports_prefill` is False and callers
use their documented fallback.
"""

from __future__ import annotations

import os
from typing import Any

# Costs come from the price map shipped with litellm (reproducible, no fetch at import); set
# LITELLM_LOCAL_MODEL_COST_MAP=False to let litellm fetch its latest map instead.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agentkd.models.base import ChatModel, Completion, ModelError, Usage, truncate_at_stop

_NATIVE_PREFILL = ("anthropic/", "claude", "bedrock/anthropic", "vertex_ai/claude")


def _retry_after(exc: Exception) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def to_model_error(exc: Exception) -> ModelError:
    """Classify a litellm/openai/httpx exception: 429, 5xx, timeouts and connection errors are retryable."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    retryable_names = ("RateLimitError", "Timeout", "APITimeoutError", "APIConnectionError", "ServiceUnavailableError",
                       "InternalServerError", "BadGatewayError", "ConnectError", "ReadTimeout",
                       # a response body that is not the JSON it should be
                       "JSONDecodeError", "APIResponseValidationError")
    retryable = name in retryable_names or (isinstance(status, int) and (status == 429 or status >= 500))
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    kind = ("timeout" if "Timeout" in name else "connection" if "Connect" in name
            else "malformed" if name in ("JSONDecodeError", "APIResponseValidationError") else None)
    return ModelError(f"{name}: {msg}", retryable=retryable, retry_after=_retry_after(exc), status=status, kind=kind)


class LiteLLMModel(ChatModel):
    provider = "litellm"

    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 api_key_env: str | None = None, timeout_s: float = 120.0, prefill: str = "auto",
                 extra: dict[str, Any] | None = None):
        self.name = model
        self.api_base = api_base
        self.api_key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        if api_base and not self.api_key:
            self.api_key = "EMPTY"  # local OpenAI-compatible servers need some key
        self.timeout_s = timeout_s
        self.extra = dict(extra or {})
        if prefill == "auto":
            self.supports_prefill = bool(api_base) or model.startswith(_NATIVE_PREFILL)
        else:
            self.supports_prefill = prefill == "yes"
        self.prefill_via_body = bool(api_base) and not model.startswith(_NATIVE_PREFILL)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "provider": self.provider, "api_base": self.api_base}

    async def _generate(self, messages, *, n, temperature, top_p, max_tokens, stop, seed, prefill):
        import litellm

        litellm.suppress_debug_info = True
        msgs = list(messages)
        kw: dict[str, Any] = {"n": n, "timeout": self.timeout_s, **self.extra}
        for key, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens),
                           ("stop", stop), ("seed", seed)):
            if value is not None:
                kw[key] = value
        if self.api_base:
            kw["api_base"] = self.api_base
        if self.api_key:
            kw["api_key"] = self.api_key
        if prefill:
            msgs.append({"role": "assistant", "content": prefill})
            if self.prefill_via_body:
                kw["extra_body"] = {**kw.get("extra_body", {}), "continue_final_message": True,
                                    "add_generation_prompt": False}
        try:
            resp = await litellm.acompletion(model=self.name, messages=msgs, num_retries=0, **kw)
        except Exception as e:  # litellm raises many types; classify once here
            raise to_model_error(e) from e
        return self._parse(resp, stop)

    def _parse(self, resp: Any, stop: list[str] | None) -> list[Completion]:
        choices = getattr(resp, "choices", None)
        if not choices:
            raise ModelError("response has no choices", retryable=True, kind="malformed")
        usage = getattr(resp, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        total_out = int(getattr(usage, "completion_tokens", 0) or 0)
        try:
            import litellm

            cost = float(litellm.completion_cost(completion_response=resp) or 0.0)
        except Exception:
            cost = 0.0
        out = []
        for ch in choices:
            text = ch.message.content
            if text is None:
                raise ModelError("a choice has no message content", retryable=True, kind="malformed")
            text, _ = truncate_at_stop(text, stop)
            out.append(Completion(text=text, finish_reason=ch.finish_reason or "stop",
                                  usage=Usage(prompt_tokens=prompt, completion_tokens=total_out // len(choices)),
                                  cost_usd=cost / len(choices)))
        return out
