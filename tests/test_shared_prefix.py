"""Cascade attention (agentkd/models/shared_prefix.py) against torch's own attention run on each row alone:
the shared prefix once for all rows plus each row's left-padded suffix, merged by log-sum-exp, gives each
row's softmax over prefix + its own tokens, for a prefill (causal, in chunks) and for a decode step."""

from __future__ import annotations

import types

import pytest
import torch

from agentkd.models import shared_prefix
from agentkd.models.shared_prefix import build_cache, cascade_attention


def reference(q, pk, pv, sk, sv, pad, causal):
    """Each row alone: its queries over [prefix, its real suffix tokens], GQA by repeating KV heads."""
    b, heads, nq, _ = q.shape
    g = heads // pk.shape[1]
    out = torch.zeros(b, nq, heads, q.shape[-1])
    for r in range(b):
        k = torch.cat([pk[0], sk[r, :, pad[r]:]], dim=1).repeat_interleave(g, 0)
        v = torch.cat([pv[0], sv[r, :, pad[r]:]], dim=1).repeat_interleave(g, 0)
        real = nq - pad[r] if causal else nq
        qr = q[r, :, nq - real:]
        mask = None
        if causal:  # query j of the real ones sees the prefix and real suffix tokens 0..j
            keys = k.shape[1]
            mask = torch.arange(keys)[None, :] <= (keys - real + torch.arange(real))[:, None]
        o = torch.nn.functional.scaled_dot_product_attention(qr, k, v, attn_mask=mask)
        out[r, nq - real:] = o.transpose(0, 1)
    return out


@pytest.mark.parametrize("chunk", [1 << 24, 97], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("prefix_len", [0, 23])
def test_cascade_attention_equals_each_row_alone(monkeypatch, chunk, prefix_len):
    monkeypatch.setattr(shared_prefix, "_CHUNK", chunk)
    gen = torch.Generator().manual_seed(0)
    b, kv, g, d, width = 3, 2, 3, 8, 9
    pad = [0, 4, 7]
    pk, pv = (torch.randn(1, kv, prefix_len, d, generator=gen) for _ in range(2))
    sk, sv = (torch.randn(b, kv, width, d, generator=gen) for _ in range(2))
    q = torch.randn(b, kv * g, width, d, generator=gen)
    cache = build_cache([(pk, pv)] if prefix_len else None, 1, width + 4)
    module = types.SimpleNamespace(layer_idx=0)
    col = torch.arange(width)
    mask = (col[None, :] <= col[:, None])[None] & ((col[None, None, :] >= torch.tensor(pad)[:, None, None])
                                                   | torch.eye(width, dtype=torch.bool)[None])
    with shared_prefix.attention(types.SimpleNamespace(config=types.SimpleNamespace(_attn_implementation="sdpa")),
                                 cache):
        got, _ = cascade_attention(module, q, sk, sv, mask[:, None], scaling=d ** -0.5)
        # a decode step: one query per row over every real suffix token
        step, _ = cascade_attention(module, q[:, :, -1:], sk, sv,
                                    (col[None, :] >= torch.tensor(pad)[:, None])[:, None, None], scaling=d ** -0.5)
    want = reference(q, pk, pv, sk, sv, pad, causal=True)
    for r in range(b):  # the pad positions' outputs are never read
        assert torch.allclose(got[r, pad[r]:], want[r, pad[r]:], atol=1e-5)
    assert torch.allclose(step[:, 0], want[:, -1], atol=1e-5)


def test_models_without_full_causal_attention_are_not_supported():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    small = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "vocab_size": 64}
    assert shared_prefix.supported(Qwen2ForCausalLM(Qwen2Config(**small)))
    sliding = Qwen2Config(**small, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    assert not shared_prefix.supported(Qwen2ForCausalLM(sliding))
    assert not shared_prefix.supported(object())
