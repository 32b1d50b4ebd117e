"""Local transformers provider on a tiny real Qwen2: n samples, stop sequences, prefill, seeds, adapters."""

from __future__ import annotations

import asyncio

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


@pytest.fixture(scope="module")
def varied(tiny_qwen_varied):
    return TransformersModel(tiny_qwen_varied, name="tiny-varied")


def reference_greedy(m: TransformersModel, ids: list[int], max_new: int) -> list[int]:
    """New token ids of a plain transformers greedy `generate` on `ids`, up to (not including) the end token."""
    import torch

    with torch.inference_mode():
        out = m.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=max_new, do_sample=False, temperature=None, top_p=None, top_k=None,
                               pad_token_id=m.tokenizer.pad_token_id)
    new = out[0, len(ids):].tolist()
    eos = {m.tokenizer.eos_token_id, m.tokenizer.pad_token_id}
    return new[: next((i for i, t in enumerate(new) if t in eos), len(new))]


async def test_stop_string_cuts_greedy_text_where_it_occurs_and_stops_generating(varied):
    import re

    ids = varied.encode_prompt(MSG, None)["input_ids"][0].tolist()
    want = reference_greedy(varied, ids, 40)
    [free] = await varied.generate(MSG, temperature=0.0, max_tokens=40)
    assert free.text == varied.tokenizer.decode(want, skip_special_tokens=True)
    assert free.usage.completion_tokens == len(want) == 40 and free.finish_reason == "length"
    # a word the greedy text contains, first occurring after its start
    stop = next(w.group() for w in re.finditer(r"[A-Za-z]{3,}", free.text) if free.text.find(w.group()) > 0)
    at = free.text.find(stop)
    [cut] = await varied.generate(MSG, temperature=0.0, max_tokens=40, stop=["never-there", stop])
    assert cut.text == free.text[:at] and cut.finish_reason == "stop"
    # generation itself stopped at the token that completed the stop string (not cut after 40 tokens)
    needed = next(n for n in range(1, len(want) + 1) if stop in varied.tokenizer.decode(want[:n]))
    assert cut.usage.completion_tokens == needed < 40
    # a stop string that only matches across the prompt boundary ("assistant\n" + the first characters)
    # does not stop generation
    across = "\n" + free.text[:2]
    assert across not in free.text
    [whole] = await varied.generate(MSG, temperature=0.0, max_tokens=40, stop=[across])
    assert whole.text == free.text and whole.usage.completion_tokens == 40


async def test_sampled_stop_cuts_the_same_sample(model):
    # same seed → same sample up to the stop point, so the stop must cut exactly there
    free = (await model.generate(MSG, temperature=1.0, max_tokens=40, seed=5))[0]
    assert len(free.text) > 12
    stop = free.text[8:11]
    cut = (await model.generate(MSG, temperature=1.0, max_tokens=40, seed=5, stop=["never-there", stop]))[0]
    assert cut.text == free.text[: free.text.find(stop)]
    assert cut.finish_reason == "stop" and cut.usage.completion_tokens < free.usage.completion_tokens


async def test_prefill_continues_assistant_text(model):
    prefill = "Thought: I will"
    # the prompt the template gives for a fresh assistant turn, with the prefill appended: no end-of-turn
    by_hand = model.tokenizer(model.tokenizer.apply_chat_template(MSG, add_generation_prompt=True, tokenize=False)
                              + prefill)["input_ids"]
    prompt = model.encode_prompt(MSG, prefill)["input_ids"][0].tolist()
    assert prompt == by_hand, model.tokenizer.decode(prompt)
    [c] = await model.generate(MSG, temperature=0.0, max_tokens=12, prefill=prefill)
    want = reference_greedy(model, by_hand, 12)
    assert c.text == model.tokenizer.decode(want, skip_special_tokens=True)
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (len(prompt), len(want))
    # this random model repeats its last input token: the reply continues " will", the prefill's last word,
    # and is not a fresh turn (which starts after "assistant\n")
    assert c.text.startswith(" will") and not c.text.startswith(prefill)
    [fresh] = await model.generate(MSG, temperature=0.0, max_tokens=12)
    assert not fresh.text.startswith(" will")


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
    # the adapted model decodes with shared-prefix attention too, and its replies are the adapter's: what
    # transformers' own greedy `generate` gives on the adapted model, alone and batched with a request
    # sharing the prompt
    assert with_adapter.worker.cascade
    with torch.no_grad():
        ref = with_adapter.model.generate(**ids, max_new_tokens=6, do_sample=False)
    want = with_adapter.tokenizer.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    [alone] = await with_adapter.generate(MSG, temperature=0.0, max_tokens=6)
    assert alone.text == want and want
    together = await asyncio.gather(with_adapter.generate(MSG, temperature=0.0, max_tokens=6),
                                    with_adapter.generate(MSG, temperature=1.0, max_tokens=6, seed=1, n=2))
    assert together[0][0].text == alone.text
    assert with_adapter.worker.batches[-1] == 3
