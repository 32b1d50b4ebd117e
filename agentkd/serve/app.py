"""The OpenAI-compatible HTTP app: `/v1/models`, `/v1/chat/completions`, `/health`.

Accepts the vLLM extensions `continue_final_message` and `add_generation_prompt` (top level or via the
OpenAI client's `extra_body`), so a request whose last message is an assistant turn is continued from
that text (prefill). Errors use OpenAI's `{"error": {...}}` shape.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentkd.models.base import ChatModel, ModelError
from agentkd.serve.config import ServeConfig


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    continue_final_message: bool = False
    add_generation_prompt: bool = True


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def _check(req: ChatRequest, cfg: ServeConfig, names: set[str]) -> None:
    if req.model not in names:
        raise APIError(404, f"The model `{req.model}` does not exist (served: {', '.join(sorted(names))}).",
                       "not_found_error", "model")
    if req.stream:
        raise APIError(400, "stream=true is not supported by agentkd serve", param="stream")
    if not 1 <= req.n <= cfg.max_n:
        raise APIError(400, f"n must be between 1 and {cfg.max_n}", param="n")
    mt = req.max_completion_tokens or req.max_tokens
    if mt is not None and not 1 <= mt <= cfg.max_tokens_limit:
        raise APIError(400, f"max_tokens must be between 1 and {cfg.max_tokens_limit}", param="max_tokens")
    if req.temperature is not None and req.temperature < 0:
        raise APIError(400, "temperature must be >= 0", param="temperature")
    if req.top_p is not None and not 0 < req.top_p <= 1:
        raise APIError(400, "top_p must be in (0, 1]", param="top_p")
    if req.continue_final_message:
        if req.add_generation_prompt:
            raise APIError(400, "continue_final_message requires add_generation_prompt=false",
                           param="add_generation_prompt")
        if req.messages[-1].role != "assistant":
            raise APIError(400, "continue_final_message requires the last message to be an assistant message",
                           param="messages")


def create_app(model: ChatModel, cfg: ServeConfig) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    served = cfg.served_name or cfg.model
    names = {served, cfg.model}
    app = FastAPI(title="agentkd serve", version="1")
    created = int(time.time())

    def error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind,
                                                                   "param": param, "code": status}})

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return error(e.status, e.message, e.kind, e.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"] if p != "body")
        return error(400, f"{loc}: {first['msg']}", "invalid_request_error", loc)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served, "object": "model", "created": created,
                                            "owned_by": "agentkd", "root": cfg.model}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> dict[str, Any]:
        _check(req, cfg, names)
        msgs = [{"role": m.role, "content": m.text()} for m in req.messages]
        prefill = None
        # vLLM semantics: a trailing assistant turn with add_generation_prompt=false is continued (prefill)
        if req.continue_final_message or (msgs[-1]["role"] == "assistant" and not req.add_generation_prompt):
            prefill = msgs.pop()["content"]
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        temperature = 1.0 if req.temperature is None else req.temperature  # OpenAI's default
        try:
            comps = await model.generate(msgs, n=req.n, temperature=temperature, top_p=req.top_p,
                                         max_tokens=req.max_completion_tokens or req.max_tokens, stop=stop,
                                         seed=req.seed, prefill=prefill)
        except ModelError as e:
            raise APIError(500, str(e), "server_error") from e
        prompt = comps[0].usage.prompt_tokens if comps else 0
        completion = sum(c.usage.completion_tokens for c in comps)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served,
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                         "finish_reason": c.finish_reason, "logprobs": None} for i, c in enumerate(comps)],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }

    return app


def run_server(cfg: ServeConfig) -> None:
    """Load the model, then serve until interrupted (blocking)."""
    import uvicorn

    from agentkd.models.config import ModelConfig
    from agentkd.models.load import load_model

    model = load_model(ModelConfig(model=cfg.model, adapter=cfg.adapter, device=cfg.device, dtype=cfg.dtype,
                                    batch=cfg.batch))
    app = create_app(model, cfg)
    import socket

    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    host, port = sock.getsockname()[:2]
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"agentkd serve: {cfg.served_name or cfg.model} on http://{url_host}:{port}/v1", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
