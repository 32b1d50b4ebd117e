"""The local model's SAG path: n samples share one prompt pass, and each carries its tokens' log-probs."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.asyncio

MSG = [{"role": "user", "content": "Thought: I will search for the answer."}]


@pytest.fixture(scope="module")
def model(tiny_qwen):
    from agentkd.models.local import TransformersModel

    return TransformersModel(tiny_qwen, device="cpu")


async def test_shared_prefill_samples_match_separately_prefilled_samples(tiny_qwen_varied):
    """(The varied tiny model: the plain one's next-token distribution is near-uniform over its 400 tokens, so
    the float rounding of a 4-row against a 1-row matmul can flip a draw; see agentkd/models/batching.py.)"""
    from agentkd.models.config import LocalBatchConfig
    from agentkd.models.local import TransformersModel

    tiny_qwen = tiny_qwen_varied

    kw = {"n": 4, "temperature": 1.0, "top_p": 0.9, "max_tokens": 10, "seed": 3}
    shared = TransformersModel(tiny_qwen, device="cpu", batch=LocalBatchConfig(share_prefix=1))
    comps = await shared.generate(MSG, **kw)
    plen = len(shared.encode_prompt(MSG, None)["input_ids"][0])
    assert shared.worker.batches == [4] and shared.worker.shared == [plen - 1], "one prompt pass for 4 rows"
    # each sample alone in its batch (its own prefill) is the same sample: row seeds, not the batch, decide
    alone = TransformersModel(tiny_qwen, device="cpu", batch=LocalBatchConfig(max_sequences=1))
    want = await alone.generate(MSG, **kw)
    # (alone, a row's prompt but its last token is prefilled as its batch's prefix, at batch 1)
    assert alone.worker.batches == [1, 1, 1, 1] and alone.worker.shared == [plen - 1] * 4
    assert [c.text for c in comps] == [c.text for c in want] and len({c.text for c in want}) > 1


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
