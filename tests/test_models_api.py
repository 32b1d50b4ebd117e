"""API providers (litellm, and the openai client for OpenAI-compatible servers) against a real HTTP
stand-in: request shape, prefill flags, usage, errors; model-spec resolution; embedded preparation."""

from __future__ import annotations

import time

import pytest

from agentkd.models import ModelError
from agentkd.models.api import LiteLLMModel
from agentkd.models.openai_compat import OpenAICompatModel
from agentkd.models.standin import StandinServer

PROVIDERS = [pytest.param(lambda url, **kw: LiteLLMModel("openai/standin", api_base=url, **kw), id="litellm"),
             pytest.param(lambda url, **kw: OpenAICompatModel("openai/standin", api_base=url, **kw), id="openai")]

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
        assert len(srv.requests) == 1, "the provider must not retry on its own (RetryingModel does, and counts)"
    assert e.value.retryable and e.value.status == 429 and e.value.retry_after == 1.0
    for fault in ("timeout", "malformed", "500"):
        with StandinServer(faults={fault: 1.0}, timeout_sleep_s=2.0) as srv:
            m = make(srv.url, timeout_s=0.5)
            with pytest.raises(ModelError) as e:
                await m.generate(MSG)
        assert e.value.retryable, fault


def test_spec_resolution():
    from agentkd.models.config import ModelConfig
    from agentkd.models.load import load_model

    assert isinstance(load_model(ModelConfig(model="openai/x", api_base="http://127.0.0.1:1/v1")), OpenAICompatModel)
    assert isinstance(load_model("openai/gpt-4o-mini"), LiteLLMModel)
    assert isinstance(load_model(ModelConfig(model="hosted_vllm/x", api_base="http://127.0.0.1:1/v1")), LiteLLMModel)


def test_embedded_prepare_is_idempotent(smollm2_server):
    """The served model was prepared by the session fixture; preparing again is a no-op."""
    from agentkd.models.embedded import is_prepared, prepare_embedded, prepared_path

    assert is_prepared("smollm2-135m")
    weights = next(prepared_path("smollm2-135m").glob("*.safetensors"))
    mtime = weights.stat().st_mtime
    t0 = time.perf_counter()
    assert prepare_embedded("smollm2-135m", progress=False) == prepared_path("smollm2-135m")
    assert time.perf_counter() - t0 < 1.0 and weights.stat().st_mtime == mtime


def test_unknown_embedded_model_is_a_config_error():
    from agentkd.core.config import ConfigError
    from agentkd.models.load import load_model

    with pytest.raises(ConfigError, match="unknown embedded model 'nope'"):
        load_model("embedded:nope")
