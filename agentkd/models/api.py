"""API models through litellm: any `provider/model`, or any OpenAI-compatible server via `api_base`.

Prefill: OpenAI-compatible servers that support it (vLLM, `agentkd serve`) receive the partial assistant
message with `continue_final_message=true, add_generation_prompt=false` in the request body; Anthropic
models take a trailing assistant message natively. Elsewhere `supports_prefill` is False and callers
use their documented fallback.
"""

from __future__ import annotations

import os
import re
from typing import Any

# Costs come from the price map shipped with litellm (reproducible, no fetch at import); set
# LITELLM_LOCAL_MODEL_COST_MAP=False to let litellm fetch its latest map instead.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from agentkd.models.base import ChatModel, Completion, FatalModelError, ModelError, Usage, truncate_at_stop

_NATIVE_PREFILL = ("anthropic/", "claude", "bedrock/anthropic", "vertex_ai/claude")


def _retry_after(exc: Exception) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_RETRYABLE_NAMES = ("RateLimitError", "Timeout", "APITimeoutError", "APIConnectionError", "ServiceUnavailableError",
                    "InternalServerError", "BadGatewayError", "ConnectError", "ReadTimeout",
                    # a response body that is not the JSON it should be
                    "JSONDecodeError", "APIResponseValidationError")
# what no retry can fix (status codes and litellm's exception names); a content-policy refusal (also a 400)
# is about one task's text, not the run, so it only ends its episode
_AUTH_NAMES = ("AuthenticationError", "PermissionDeniedError")
_NOT_FOUND_NAMES = ("NotFoundError",)
_BAD_REQUEST_NAMES = ("BadRequestError", "ContextWindowExceededError", "UnsupportedParamsError")
# litellm reports a missing key as a 500 or a connection error; these are its (and the openai client's) words
_MISSING_KEY = re.compile(r"missing (credentials|(\w+ )?api[ _]key)|api_key client option must be set", re.I)
_NOISE = re.compile(r"^(litellm\.\w+: )?(\w+Error: )*(\w+Exception - )?")


def _detail(exc: Exception) -> str:
    text = str(exc).strip()
    line = _NOISE.sub("", text.splitlines()[0]) if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _fatal(exc: Exception, status: int | None, name: str, who: str, model: str, api_base: str | None,
           api_key_env: str | None) -> FatalModelError | None:
    """`exc` as a `FatalModelError` with one line saying what to do, or None if a retry might help."""

    def key_hint(verb: str) -> str:
        if api_key_env or api_base:
            return f"{verb} {api_key_env}" if api_key_env else "name the key's environment variable in api_key_env"
        from agentkd.models.preflight import credential_vars

        names = credential_vars(model)
        return f"{verb} {' or '.join(names)}" if names else "check the provider's API key"

    detail = _detail(exc)
    if (not api_base and _MISSING_KEY.search(detail)
            and name in ("InternalServerError", "APIConnectionError", "APIError", *_AUTH_NAMES)):
        from agentkd.models.preflight import missing_credentials

        missing = missing_credentials(model, api_key_env)
        hint = f"set {' or '.join(missing)}" if missing else key_hint("set")
        return FatalModelError(f"{who}: no API key: {hint}", status=status)
    if name == "ContentPolicyViolationError":
        return None
    if name in _AUTH_NAMES or status in (401, 403):
        what = "permission denied" if status == 403 or name == "PermissionDeniedError" else "authentication failed"
        return FatalModelError(f"{who}: {what} ({status or name}: {detail}): {key_hint('check')}", status=status)
    if name in _NOT_FOUND_NAMES or status == 404:
        return FatalModelError(f"{who}: model not found (404: {detail}): check the model name"
                               + (" and that api_base ends in /v1" if api_base else ""), status=status)
    if name in _BAD_REQUEST_NAMES or status == 400:
        hint = ("shorten the prompt (agent.max_steps, agent.max_observation_chars) or use a model with a longer "
                "context" if name == "ContextWindowExceededError" else "check the sampling parameters and extra options")
        return FatalModelError(f"{who}: bad request ({status or name}: {detail}): {hint}", status=status)
    return None


def to_model_error(exc: Exception, model: str = "model", *, api_base: str | None = None,
                   api_key_env: str | None = None) -> ModelError:
    """Classify a litellm/openai/httpx exception: 429, 5xx, timeouts and connection errors are retryable;
    missing or rejected credentials, an unknown model and a bad request are `FatalModelError`s."""
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    name = type(exc).__name__
    who = f"{model} (litellm" + (f" at {api_base})" if api_base else ")")
    fatal = _fatal(exc, status, name, who, model, api_base, api_key_env)
    if fatal is not None:
        return fatal
    retryable = name in _RETRYABLE_NAMES or (status is not None and (status == 429 or status >= 500))
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
        self.api_key_env = api_key_env  # named in the message when the key is missing or rejected
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
            raise to_model_error(e, self.name, api_base=self.api_base, api_key_env=self.api_key_env) from e
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
