"""Local transformers provider on a tiny real Qwen2: n samples, stop sequences, prefill, seeds, adapters."""

from __future__ import annotations

import pytest

from agentkd.models.config import ModelConfig
from agentkd.models.load import load_model
from agentkd.models.local import TransformersModel

MSG = [{"role": "user", "content": "Thought: the capital of France?"}]


@pytest.fixture(scope="module")
def model(tiny_qwen):
    return TransformersModel(tiny_qwen, name="tiny")


async def test_n_samples_and_usage(model):
    comps = await model.generate(MSG, n=4, temperature=1.0, max_tokens=12, seed=0)
    assert len(comps) == 4
    assert len({c.text for c in comps}) > 1, "sampled completions should differ"
    for c in comps:
        assert c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= 13
        assert c.finish_reason in ("stop", "length")


async def test_seed_reproducible_and_greedy_copies(model):
    a = await model.generate(MSG, n=2, temperature=1.0, max_tokens=10, seed=7)
    b = await model.generate(MSG, n=2, temperature=1.0, max_tokens=10, seed=7)
    assert [c.text for c in a] == [c.text for c in b]
    g = await model.generate(MSG, n=3, temperature=0.0, max_tokens=10)
    assert len(g) == 3 and len({c.text for c in g}) == 1


async def test_stop_sequence_cut_and_honoured(model):
    # same seed → same sample up to the stop point, so the stop must cut exactly there
    free = (await model.generate(MSG, temperature=1.0, max_tokens=40, seed=5))[0].text
    assert len(free) > 12
    stop = free[8:11]
    cut = (await model.generate(MSG, temperature=1.0, max_tokens=40, seed=5, stop=["never-there", stop]))[0]
    assert cut.text == free[: free.find(stop)]
    assert len(cut.text) < len(free)
    assert cut.finish_reason == "stop"
    # a stop string that only matches across the prompt boundary must not stop generation
    assert (await model.generate(MSG, temperature=1.0, max_tokens=40, seed=5, stop=["\n" + free[:1]]))[0].text


async def test_prefill_continues_assistant_text(model):
    prompt = model.encode_prompt(MSG, "Thought: I will")["input_ids"][0].tolist()
    decoded = model.tokenizer.decode(prompt)
    assert decoded.endswith("<|im_start|>assistant\nThought: I will"), decoded
    comps = await model.generate(MSG, temperature=0.0, max_tokens=5, prefill="Thought: I will")
    assert comps[0].usage.prompt_tokens == len(prompt)


async def test_load_model_spec_paths(tiny_qwen):
    m = load_model(f"local:{tiny_qwen}")
    assert isinstance(m, TransformersModel) and m.name == f"local:{tiny_qwen}"
    m2 = load_model(ModelConfig(model=str(tiny_qwen), device="cpu", dtype="float32"))
    assert isinstance(m2, TransformersModel)


async def test_lora_adapter_is_applied(tiny_qwen, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_qwen)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    with_adapter = TransformersModel(tiny_qwen, adapter=tmp_path / "adapter")
    plain = TransformersModel(tiny_qwen)
    ids = plain.encode_prompt(MSG, None)
    with torch.no_grad():
        a = with_adapter.model(**ids).logits
        b = plain.model(**ids).logits
    assert not torch.allclose(a, b), "adapter weights must change the output"
    assert with_adapter.describe()["adapter"] == str(tmp_path / "adapter")
