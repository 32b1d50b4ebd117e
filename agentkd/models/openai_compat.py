"""OpenAI-compatible servers (vLLM, SGLang, `agentkd serve`, ...) through the stock `openai` client.

`load_model` picks this for `openai/NAME` with an `api_base`: it costs about a third of litellm's
per-request CPU, which matters when a fast local server is driven at high concurrency. Prefill is sent
the vLLM way (`continue_final_message=true, add_generation_prompt=false`). Cost comes from the recipe's
prices (a self-hosted model has no list price); other providers go through `LiteLLMModel`.
"""

from __future__ import annotations

from typing import Any

from agentkd.models.api import to_model_error
from agentkd.models.base import ChatModel, Completion, ModelError, Usage, truncate_at_stop


class OpenAICompatModel(ChatModel):
    provider = "openai-compatible"

    def __init__(self, model: str, *, api_base: str, api_key: str | None = None, timeout_s: float = 120.0,
                 prefill: str = "auto", extra: dict[str, Any] | None = None):
        from openai import AsyncOpenAI

        self.name = model
        self.served_name = model.removeprefix("openai/")
        self.api_base = api_base
        self.supports_prefill = prefill != "no"
        self.extra = dict(extra or {})
        self._client = AsyncOpenAI(base_url=api_base, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=0)

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "provider": self.provider, "api_base": self.api_base}

    async def _generate(self, messages, *, n, temperature, top_p, max_tokens, stop, seed, prefill):
        msgs = list(messages)
        kw: dict[str, Any] = {"n": n, **self.extra}
        for key, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens),
                           ("stop", stop), ("seed", seed)):
            if value is not None:
                kw[key] = value
        if prefill:
            msgs.append({"role": "assistant", "content": prefill})
            kw["extra_body"] = {**kw.get("extra_body", {}), "continue_final_message": True,
                                "add_generation_prompt": False}
        try:
            resp = await self._client.chat.completions.create(model=self.served_name, messages=msgs, **kw)
        except Exception as e:
            raise to_model_error(e) from e
        if not getattr(resp, "choices", None):
            raise ModelError("response has no choices", retryable=True)
        prompt = int(getattr(resp.usage, "prompt_tokens", 0) or 0) if resp.usage else 0
        total_out = int(getattr(resp.usage, "completion_tokens", 0) or 0) if resp.usage else 0
        out = []
        for ch in resp.choices:
            if ch.message is None or ch.message.content is None:
                raise ModelError("a choice has no message content", retryable=True)
            text, _ = truncate_at_stop(ch.message.content, stop)
            out.append(Completion(text=text, finish_reason=ch.finish_reason or "stop",
                                  usage=Usage(prompt_tokens=prompt, completion_tokens=total_out // len(resp.choices))))
        return out

    async def aclose(self) -> None:
        await self._client.close()
