"""API providers (litellm, and the openai client for OpenAI-compatible servers) against a real HTTP
stand-in: request shape, prefill flags, usage, errors; model-spec resolution; embedded preparation."""

from __future__ import annotations

import pytest
from conftest import wait_until

from agentkd.models import ModelError
from agentkd.models.api import LiteLLMModel
from agentkd.models.openai_compat import OpenAICompatModel
from agentkd.testing.standin import StandinServer


def _via_aiohttp(m: OpenAICompatModel) -> OpenAICompatModel:
    m._plain = None  # the path for https / proxied endpoints
    return m


PROVIDERS = [pytest.param(lambda url, **kw: LiteLLMModel("openai/standin", api_base=url, **kw), id="litellm"),
             pytest.param(lambda url, **kw: OpenAICompatModel("openai/standin", api_base=url, **kw), id="openai"),
             pytest.param(lambda url, **kw: _via_aiohttp(OpenAICompatModel("openai/standin", api_base=url, **kw)),
                          id="openai-aiohttp")]

MSG = [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "Task: 2+2?"}]


def test_prefill_support_by_provider():
    assert not LiteLLMModel("openai/gpt-4o-mini").supports_prefill  # OpenAI chat has no assistant prefill
    assert LiteLLMModel("anthropic/claude-3-5-sonnet-20241022").supports_prefill
    assert LiteLLMModel("openai/Qwen2.5-7B-Instruct", api_base="http://127.0.0.1:1/v1").supports_prefill
    assert not LiteLLMModel("openai/x", api_base="http://127.0.0.1:1/v1", prefill="no").supports_prefill


@pytest.mark.parametrize("make", PROVIDERS)
async def test_request_shape_and_vllm_prefill_flags(make):
    with StandinServer() as srv:
        m = make(srv.url)
        comps = await m.generate(MSG, n=2, temperature=0.3, top_p=0.9, max_tokens=17, stop=["<end_code>"], seed=5,
                                 prefill="Thought: I")
        await m.aclose()
        body = srv.requests[-1]["body"]
    assert len(comps) == 2 and comps[0].usage.prompt_tokens > 0 and comps[0].usage.completion_tokens > 0
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (2, 0.3, 0.9, 17, 5)
    assert body["stop"] == ["<end_code>"]
    assert body["messages"][-1] == {"role": "assistant", "content": "Thought: I"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


@pytest.mark.parametrize("make", PROVIDERS)
async def test_http_errors_become_model_errors(make):
    with StandinServer(faults={"429": 1.0}) as srv:
        m = make(srv.url)
        with pytest.raises(ModelError) as e:
            await m.generate(MSG)
        await m.aclose()
        assert len(srv.requests) == 1, "the provider must not retry on its own (RetryingModel does, and counts)"
    assert e.value.retryable and e.value.status == 429 and e.value.retry_after == 1.0
    for fault in ("timeout", "malformed", "500"):
        with StandinServer(faults={fault: 1.0}, timeout_sleep_s=2.0) as srv:
            m = make(srv.url, timeout_s=0.5)
            with pytest.raises(ModelError) as e:
                await m.generate(MSG)
            await m.aclose()
        assert e.value.retryable, fault


def test_standin_stops_quietly_with_idle_keep_alive_connections(caplog):
    import logging
    import socket

    srv = StandinServer().start()
    host, port = srv.url.split("//")[1].split("/")[0].split(":")
    conns = [socket.create_connection((host, int(port))) for _ in range(3)]
    try:
        assert wait_until(lambda: srv.open_connections == 3)  # accepted: each connection's task waits for a request
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            srv.stop()
        assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
        assert all(c.recv(1) == b"" for c in conns)  # dropped
    finally:
        for c in conns:
            c.close()


def test_spec_resolution():
    from agentkd.models.config import ModelConfig
    from agentkd.models.load import load_model

    assert isinstance(load_model(ModelConfig(model="openai/x", api_base="http://127.0.0.1:1/v1")), OpenAICompatModel)
    assert isinstance(load_model("openai/gpt-4o-mini"), LiteLLMModel)
    assert isinstance(load_model(ModelConfig(model="hosted_vllm/x", api_base="http://127.0.0.1:1/v1")), LiteLLMModel)


def test_embedded_prepare_is_idempotent(smollm2_server, monkeypatch):
    """The served model was prepared by the session fixture; preparing again loads nothing and rewrites
    nothing (how long each takes: tools/bench/embedded.py)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentkd.models.embedded import is_prepared, prepare_embedded, prepared_path

    assert is_prepared("smollm2-135m")
    folder = prepared_path("smollm2-135m")
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [folder, *folder.iterdir()]}

    def no_conversion(*args, **kwargs):
        raise AssertionError("prepare_embedded converted the GGUF again")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_conversion)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", no_conversion)
    assert prepare_embedded("smollm2-135m", progress=False) == folder
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [folder, *folder.iterdir()]} == before


def test_unknown_embedded_model_is_a_config_error():
    from agentkd.core.config import ConfigError
    from agentkd.models.load import load_model

    with pytest.raises(ConfigError, match="unknown embedded model 'nope'"):
        load_model("embedded:nope")


def _reply(text: str) -> bytes:
    import json

    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()


@pytest.mark.parametrize("framing", ["chunked", "until-close", "stale-keepalive", "drop-second"])
async def test_plain_http_client_framings(framing):
    """The plain-http keep-alive client: chunked bodies, bodies delimited by the server closing, and a
    kept-alive connection the server closed (seen while idle, or only once the next request was sent:
    that request is sent again on a fresh connection)."""
    import asyncio
    import json

    bodies = []

    async def handle(reader, writer):
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if framing == "drop-second" and served == 1:
                writer.close()  # a keep-alive connection dropped under a request it never answered
                return
            served += 1
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            bodies.append(json.loads(await reader.readexactly(length)))
            body = _reply(f"reply {len(bodies)}")
            if framing == "chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                await writer.drain()
                for part in (body[:10], body[10:]):
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")
            elif framing == "until-close":
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
                await writer.drain()
                writer.close()
                return
            elif framing == "drop-second":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:  # answers with a length, keeps nothing alive, but does not say so
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                writer.close()
                return
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    m = OpenAICompatModel("openai/x", api_base=f"http://127.0.0.1:{port}/v1", timeout_s=5)
    try:
        for i in (1, 2, 3):
            if framing == "stale-keepalive":
                await asyncio.sleep(0.05)  # let the close reach the client's idle connection
            [c] = await m.generate(MSG, seed=i)
            assert c.text == f"reply {i}" and c.usage.prompt_tokens == 3
        assert [b["seed"] for b in bodies] == [1, 2, 3] and bodies[0]["messages"] == MSG
    finally:
        await m.aclose()
        server.close()
        await server.wait_closed()
