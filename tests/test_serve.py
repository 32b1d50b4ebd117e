"""`agentkd serve embedded:smollm2-135m` as a real process, driven by the stock openai client and litellm."""

from __future__ import annotations

import pytest

MODEL = "embedded:smollm2-135m"


@pytest.fixture(scope="module")
def server(smollm2_server):
    return smollm2_server


def _listeners(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on `port` in this network namespace."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, _, hexport = local.partition(":")
                if state == "0A" and int(hexport, 16) == port:
                    out.add(addr)
    return out


def test_binds_loopback_and_lists_model(server):
    from urllib.parse import urlparse

    from openai import OpenAI

    assert _listeners(urlparse(server).port) == {"0100007F"}  # 127.0.0.1 only: not 0.0.0.0, not [::]
    client = OpenAI(base_url=server, api_key="unused")
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_n4_with_stop_sequence(server):
    from openai import OpenAI

    client = OpenAI(base_url=server, api_key="unused")
    msgs = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, n=4, temperature=0.8, max_tokens=32, seed=11)
    assert len(r.choices) == 4 and [c.index for c in r.choices] == [0, 1, 2, 3]
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) > 1
    stop = ","
    assert any(stop in t for t in texts), texts  # the model does write commas here...
    r2 = client.chat.completions.create(model=MODEL, messages=msgs, n=4, temperature=0.8, max_tokens=32, seed=11,
                                        stop=[stop])
    assert len(r2.choices) == 4
    for full, c in zip(texts, r2.choices, strict=True):  # ...and with stop=",", same seed, each stops before it
        assert stop not in c.message.content
        if stop in full:
            assert c.message.content == full[: full.index(stop)] and c.finish_reason == "stop"
    assert r2.usage.completion_tokens < r.usage.completion_tokens


def test_prefill_continues_assistant_text(server):
    from openai import OpenAI

    client = OpenAI(base_url=server, api_key="unused")
    prefix = "The capital of France is"
    msgs = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": prefix}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12, temperature=0,
                                       extra_body={"continue_final_message": True, "add_generation_prompt": False})
    text = r.choices[0].message.content
    assert "Paris" in text and not text.startswith(prefix)
    # without prefill the greedy answer is a fresh assistant turn, which differs
    plain = client.chat.completions.create(model=MODEL, messages=msgs[:1], max_tokens=12, temperature=0)
    assert plain.choices[0].message.content != text


def test_errors_are_openai_shaped(server):
    from openai import BadRequestError, NotFoundError, OpenAI

    client = OpenAI(base_url=server, api_key="unused", max_retries=0)
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(BadRequestError, match="last message to be an assistant"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"continue_final_message": True, "add_generation_prompt": False})


def test_litellm_against_server(server):
    import litellm

    msgs = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    kw = dict(model=f"openai/{MODEL}", api_base=server, api_key="unused", messages=msgs, n=4, temperature=0.8,
              max_tokens=32, seed=3)
    full = [c.message.content for c in litellm.completion(**kw).choices]
    assert any("," in t for t in full), full  # the stop below has something to cut
    r = litellm.completion(**kw, stop=[","])
    assert [c.message.content for c in r.choices] == [t.split(",")[0] for t in full]
    prefix = "The capital of France is"
    r = litellm.completion(model=f"openai/{MODEL}", api_base=server, api_key="unused", temperature=0,
                           max_tokens=12, messages=[{"role": "user", "content": "What is the capital of France?"},
                                                    {"role": "assistant", "content": prefix}],
                           extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert "Paris" in r.choices[0].message.content


async def test_agentkd_api_model_prefill_through_server(server):
    """Our own LiteLLMModel provider sends prefill the vLLM way to an OpenAI-compatible api_base."""
    from agentkd.models.api import LiteLLMModel

    m = LiteLLMModel(f"openai/{MODEL}", api_base=server)
    assert m.supports_prefill
    [c] = await m.generate([{"role": "user", "content": "What is the capital of France?"}], temperature=0,
                           max_tokens=12, prefill="The capital of France is")
    assert "Paris" in c.text and c.usage.completion_tokens > 0


def test_batch_settings_reach_the_served_model(monkeypatch, tmp_path):
    """`--set serve.batch.KEY=VALUE` (and a recipe's `serve.batch`) configure the model's batching."""
    from typer.testing import CliRunner

    import agentkd.models.load
    from agentkd.cli import app

    seen = []

    def load_model(cfg, **kw):
        seen.append(cfg.batch)
        raise RuntimeError("loaded")

    monkeypatch.setattr(agentkd.models.load, "load_model", load_model)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("serve:\n  batch:\n    threads: 0\n")
    out = CliRunner().invoke(app, ["serve", MODEL, "--config", str(recipe), "--set", "serve.batch.max_sequences=4",
                                   "--set", "serve.batch.attention=plain"])
    assert isinstance(out.exception, RuntimeError) and str(out.exception) == "loaded"
    [batch] = seen
    assert (batch.threads, batch.max_sequences, batch.attention) == (0, 4, "plain")
    bad = CliRunner().invoke(app, ["serve", MODEL, "--set", "serve.batch.attention=fast"])
    assert "batch.attention" in str(bad.exception) and not seen[1:]
