"""A test double: a deterministic model for network-free tests of the agent loop (like pydantic-ai's TestModel).

`ScriptedModel(["reply 1", "reply 2"])` returns the replies in order, one per `generate` call (each of the
n choices gets the same text unless a reply is a list of n strings). A callable script receives the
messages and prefill and returns the reply. Every call is recorded in `.calls`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentkd.models.base import ChatModel, Completion, Message, Usage, truncate_at_stop

Reply = str | list[str]


class ScriptedModel(ChatModel):
    provider = "scripted"

    def __init__(self, script: Sequence[Reply] | Callable[[list[Message], str | None], Reply], *,
                 name: str = "scripted", supports_prefill: bool = True):
        self.script = script if callable(script) else list(script)
        self.name = name
        self.supports_prefill = supports_prefill
        self.calls: list[dict[str, Any]] = []

    async def _generate(self, messages, *, n, temperature, top_p, max_tokens, stop, seed, prefill):
        self.calls.append({"messages": messages, "n": n, "temperature": temperature, "top_p": top_p,
                           "max_tokens": max_tokens, "stop": stop, "seed": seed, "prefill": prefill})
        if callable(self.script):
            reply = self.script(messages, prefill)
        else:
            if not self.script:
                raise RuntimeError("ScriptedModel ran out of replies")
            reply = self.script.pop(0)
        texts = reply if isinstance(reply, list) else [reply] * n
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        out = []
        for t in texts[:n]:
            t, _ = truncate_at_stop(t, stop)
            out.append(Completion(text=t, finish_reason="stop",
                                  usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(t.split()))))
        return out
