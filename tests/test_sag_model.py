"""The local model's SAG path: n samples share one prompt pass, and each carries its tokens' log-probs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio

MSG = [{"role": "user", "content": "Thought: I will search for the answer."}]


@pytest.fixture(scope="module")
def model(tiny_qwen):
    from agentkd.models.local import TransformersModel

    return TransformersModel(tiny_qwen, device="cpu")


async def test_shared_prefill_samples_match_plain_num_return_sequences(model):
    import torch

    comps = await model.generate(MSG, n=4, temperature=1.0, top_p=0.9, max_tokens=10, seed=3)
    enc = model.encode_prompt(MSG, None)
    torch.manual_seed(3)
    with torch.inference_mode():
        ref = model.model.generate(**enc, do_sample=True, temperature=1.0, top_p=0.9, top_k=0, max_new_tokens=10,
                                   num_return_sequences=4, pad_token_id=model.tokenizer.pad_token_id)
    plen = enc["input_ids"].shape[1]
    want = []
    for row in ref[:, plen:].tolist():
        ids = row[: next((i for i, t in enumerate(row) if t == model.tokenizer.eos_token_id), len(row))]
        want.append(model.tokenizer.decode(ids, skip_special_tokens=True))
    assert [c.text for c in comps] == want and len(set(want)) > 1


async def test_logprobs_are_the_models_token_logprobs(model):
    import torch

    [comp] = await model.generate(MSG, n=1, temperature=0.0, max_tokens=6)
    enc = model.encode_prompt(MSG, None)
    ids = model.tokenizer(comp.text, add_special_tokens=False)["input_ids"]
    full = torch.cat([enc["input_ids"], torch.tensor([ids])], dim=1)
    with torch.inference_mode():
        logits = model.model(input_ids=full).logits[0].float()
    plen = enc["input_ids"].shape[1]
    lp = torch.log_softmax(logits[plen - 1:-1], dim=-1).gather(1, torch.tensor(ids)[:, None]).squeeze(1)
    assert comp.logprobs is not None and len(comp.logprobs) == len(ids)
    assert comp.logprobs == pytest.approx(lp.tolist(), abs=1e-3)
    many = await model.generate(MSG, n=3, temperature=1.0, max_tokens=6, seed=1)
    assert all(c.logprobs and all(x <= 0 for x in c.logprobs) for c in many)
