"""OpenAI-compatible servers (vLLM, SGLang, `agentkd serve`, ...): one JSON POST per chat completion.

`load_model` picks this for `openai/NAME` with an `api_base`. Plain `http://` endpoints without a proxy
(local servers, the high-concurrency case) go through `agentkd.models.http11.PlainHttpPool`, a small
keep-alive HTTP/1.1 client on asyncio protocols; anything else (https, proxies) through an aiohttp session. Per request the
plain client costs about a third of aiohttp's CPU, and aiohttp about a tenth of the stock `openai`
client's (whose request transform and httpx connection-pool rescans dominated a 64-way collection
profile): this matters when a fast local server is driven at high concurrency from one event loop.
Prefill is sent the vLLM way (`continue_final_message=true, add_generation_prompt=false`). Cost comes
from the recipe's prices (a self-hosted model has no list price); other providers go through
`LiteLLMModel`.

Errors map like `agentkd.models.api.to_model_error`: 429, 5xx, timeouts, connection errors and bodies
that are not a chat completion are retryable `ModelError`s (with `status` and `Retry-After`); 400, 401,
403 and 404 are `FatalModelError`s (no retry can fix them: the run stops); other HTTP errors are not
retryable. This client never retries on its own (`RetryingModel` does, and counts), except
to resend a request once on a fresh connection when a kept-alive one turns out closed before any reply.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

from agentkd.models.base import ChatModel, Completion, FatalModelError, ModelError, Usage, truncate_at_stop
from agentkd.models.http11 import ConnectionLost, PlainHttpPool

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _env_proxy(url: str) -> str | None:
    """The proxy that HTTP(S)_PROXY / NO_PROXY choose for `url` (as httpx's and requests' trust_env do)."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _error_message(status: int, body: bytes) -> str:
    try:
        err = json.loads(body)
        msg = err.get("error", err) if isinstance(err, dict) else err
        msg = msg.get("message", msg) if isinstance(msg, dict) else msg
    except ValueError:
        msg = body[:200].decode("utf-8", "replace")
    return f"HTTP {status}: {msg}"


class OpenAICompatModel(ChatModel):
    provider = "openai-compatible"

    def __init__(self, model: str, *, api_base: str, api_key: str | None = None, timeout_s: float = 120.0,
                 prefill: str = "auto", extra: dict[str, Any] | None = None, api_key_env: str | None = None):
        self.name = model
        self.api_key_env = api_key_env  # named in the message when the server rejects the key
        self.served_name = model.removeprefix("openai/")
        self.api_base = api_base
        self.supports_prefill = prefill != "no"
        self.extra = dict(extra or {})
        self.timeout_s = timeout_s
        self._url = api_base.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key or 'EMPTY'}", "Content-Type": "application/json",
                         "Accept": "application/json"}
        self._proxy = _env_proxy(self._url)
        self._session: Any = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        # plain http without a proxy (local servers, the high-concurrency case): our own keep-alive client
        parts = urlsplit(self._url)
        self._plain: tuple[str, int] | None = None
        if parts.scheme == "http" and not self._proxy and parts.hostname and not parts.username:
            port = parts.port or 80
            self._plain = (parts.hostname, port)
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            self._head = (f"POST {path} HTTP/1.1\r\nHost: {host}" + (f":{port}" if parts.port else "")
                          + "".join(f"\r\n{k}: {v}" for k, v in self._headers.items())
                          + "\r\nUser-Agent: agentkd\r\nContent-Length: ").encode("latin-1")
        self._pool: PlainHttpPool | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "provider": self.provider, "api_base": self.api_base}

    def _get_session(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            import aiohttp

            # one session per event loop (a model object may outlive an asyncio.run); no connection cap:
            # RateLimitedModel bounds the requests in flight. The proxy environment is read once (in
            # __init__), not per request as trust_env=True would (it re-reads ~/.netrc on every call)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
            self._session_loop = loop
        return self._session

    def _body(self, messages, *, n, temperature, top_p, max_tokens, stop, seed, prefill) -> dict[str, Any]:
        extra = dict(self.extra)
        extra_body = extra.pop("extra_body", None) or {}
        body: dict[str, Any] = {"messages": list(messages), "model": self.served_name, "n": n, **extra}
        for key, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens),
                           ("stop", stop), ("seed", seed)):
            if value is not None:
                body[key] = value
        if prefill:
            body["messages"].append({"role": "assistant", "content": prefill})
            extra_body = {**extra_body, "continue_final_message": True, "add_generation_prompt": False}
        body.update(extra_body)
        return body

    def _get_pool(self) -> PlainHttpPool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool_loop is not loop:
            self._pool = PlainHttpPool(*self._plain)  # type: ignore[misc]
            self._pool_loop = loop
        return self._pool

    async def _generate(self, messages, *, n, temperature, top_p, max_tokens, stop, seed, prefill):
        data = _dumps(self._body(messages, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                 stop=stop, seed=seed, prefill=prefill)).encode()
        if self._plain is not None:
            try:
                status, headers, raw = await self._get_pool().post(
                    self._head + str(len(data)).encode() + b"\r\n\r\n" + data, self.timeout_s)
            except (asyncio.TimeoutError, TimeoutError) as e:
                raise ModelError(f"APITimeoutError: no response within {self.timeout_s}s", retryable=True,
                             kind="timeout") from e
            except (OSError, ConnectionLost, ValueError) as e:
                raise ModelError(f"APIConnectionError: {type(e).__name__}: {e}", retryable=True,
                             kind="connection") from e
            retry_after = _retry_after(headers.get("retry-after"))
        else:
            status, retry_after, raw = await self._post_aiohttp(data)
        return self._completions_or_error(status, retry_after, raw, stop)

    async def _post_aiohttp(self, data: bytes) -> tuple[int, float | None, bytes]:
        import aiohttp

        try:
            async with self._get_session().post(self._url, data=data, headers=self._headers,
                                               proxy=self._proxy) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except (asyncio.TimeoutError, TimeoutError) as e:
            raise ModelError(f"APITimeoutError: no response within {self.timeout_s}s", retryable=True,
                             kind="timeout") from e
        except aiohttp.ClientError as e:
            raise ModelError(f"APIConnectionError: {type(e).__name__}: {e}", retryable=True,
                             kind="connection") from e
        return status, retry_after, raw

    def _completions_or_error(self, status: int, retry_after: float | None, raw: bytes,
                              stop: list[str] | None) -> list[Completion]:
        if status in (400, 401, 403, 404):
            raise self._fatal(status, raw)
        if status >= 400:
            raise ModelError(_error_message(status, raw), retryable=status in (408, 429) or status >= 500,
                             retry_after=retry_after, status=status)
        try:
            resp_obj = json.loads(raw)
        except ValueError as e:
            raise ModelError(f"JSONDecodeError: response is not JSON ({len(raw)} bytes)", retryable=True,
                             status=status, kind="malformed") from e
        return self._completions(resp_obj, stop)

    def _fatal(self, status: int, raw: bytes) -> FatalModelError:
        """A client error no retry can fix, as one line naming the model, the server and what to do."""
        detail = _error_message(status, raw).removeprefix("HTTP ")
        detail = detail if len(detail) <= 200 else detail[:197] + "..."
        who = f"{self.name} (openai-compatible at {self.api_base})"
        if status in (401, 403):
            hint = (f"check {self.api_key_env}" if self.api_key_env else
                    "the server wants an API key: name the environment variable that holds it in api_key_env")
            what = "authentication failed" if status == 401 else "permission denied"
        elif status == 404:
            what, hint = "not found", (f"check the model name (GET {self.api_base.rstrip('/')}/models lists the "
                                       "served ones) and that api_base ends in /v1")
        else:
            what, hint = "bad request", "check the sampling parameters, extra options and prompt length"
        return FatalModelError(f"{who}: {what} ({detail}): {hint}", status=status)

    @staticmethod
    def _completions(resp: Any, stop: list[str] | None) -> list[Completion]:
        choices = resp.get("choices") if isinstance(resp, dict) else None
        if not choices or not isinstance(choices, list):
            raise ModelError("response has no choices", retryable=True, kind="malformed")
        usage = resp.get("usage") or {}
        try:
            prompt = int(usage.get("prompt_tokens") or 0)
            total_out = int(usage.get("completion_tokens") or 0)
        except (AttributeError, TypeError, ValueError):
            prompt = total_out = 0
        out = []
        for ch in choices:
            message = ch.get("message") if isinstance(ch, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                raise ModelError("a choice has no message content", retryable=True, kind="malformed")
            text, _ = truncate_at_stop(content, stop)
            out.append(Completion(text=text, finish_reason=ch.get("finish_reason") or "stop",
                                  usage=Usage(prompt_tokens=prompt, completion_tokens=total_out // len(choices))))
        return out

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                await session.close()
            except RuntimeError:  # created on an event loop that is gone
                pass
