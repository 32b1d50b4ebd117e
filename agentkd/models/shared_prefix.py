"""Shared-prefix ("cascade") attention for a batch whose rows start with the same tokens.

Concurrent agent episodes send prompts that share a long system prompt (1,290 of ~1,310 tokens for the
quickstart teacher), and a request's n samples share all of theirs. A plain batch holds that prefix's keys and
values once per row, so every decode step reads B copies of it: on a CPU, at 8 rows x 1,300 tokens, attention
over those copies was 64 ms of a 172 ms step, and copying the prefix cache to every row made the 8-row prefill
cost 5.0 s against 2.7 s for one row. Here the prefix is kept once (`SuffixLayer.prefix`, batch 1) and every
attention call is split in two: the queries of all rows stacked against the prefix keys (one matmul, no mask:
every row sees all of the prefix), and each row's queries against its own suffix (its prompt after the prefix,
then what it generated) under the row's mask. The two partial softmaxes are merged by their log-sum-exp, which
is exact (the same sum as one softmax over prefix + suffix), up to float rounding.

The suffix keys and values live in buffers allocated once per batch (`SuffixLayer`: no `torch.cat` per
token, which was 250 ms against 172 ms per 8-row step), left-padded per row, and rows can be dropped from
them when they finish (`select`).

It plugs into transformers' own model code: `build_cache` makes a `Cache` whose `update` writes into the
buffers and returns the suffix views, and `cascade_attention` is registered in `AttentionInterface` under
`ATTENTION`; the model runs with that implementation only inside `attention(model)`. The prefix of the layer
being run is looked up by the module's `layer_idx` in the cache made active for this thread. Only models
whose layers all use full causal attention without logit soft-capping or sinks qualify (`supported`); other
models decode with a plain cache (see agentkd/models/decode.py).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

ATTENTION = "agentkd_shared_prefix"
_CHUNK = 1 << 24  # most score elements computed at once (64 MiB of float32)
_active = threading.local()


def supported(model: Any) -> bool:
    """Whether `model` (a transformers causal LM, maybe PEFT-wrapped) can run `cascade_attention`."""
    config = getattr(model, "config", None)
    if config is None or not getattr(model, "_supports_attention_backend", False):
        return False
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if not getattr(text, "is_causal", True) or getattr(text, "attn_logit_softcapping", None):
        return False
    if getattr(text, "kv_sharing_modes", None) or getattr(text, "attention_chunk_size", None):
        return False
    if any(hasattr(m, "sinks") for m in model.modules()):  # attention sinks (gpt-oss): not in this softmax
        return False
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return getattr(text, "sliding_window", None) is None or getattr(text, "use_sliding_window", True) is False


def _register() -> None:
    from transformers import AttentionInterface

    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, cascade_attention)


@contextlib.contextmanager
def attention(model: Any, cache: Any) -> Iterator[None]:
    """Run `model` with cascade attention over `cache` (this thread only; the model's own implementation is
    restored after)."""
    _register()
    config = model.config
    before = config._attn_implementation
    _active.cache = cache
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before
        _active.cache = None


@functools.cache
def _classes() -> tuple[type, type]:
    """The cache classes, made on first use (importing this module does not import transformers)."""
    from transformers.cache_utils import Cache, CacheLayerMixin

    class SuffixLayer(CacheLayerMixin):
        """One layer's shared prefix (keys, values of batch 1, or None) and its rows' suffix keys/values in
        [rows, kv heads, capacity, head dim] buffers written in place."""

        is_sliding = False

        def __init__(self, prefix: tuple[Any, Any] | None, capacity: int):
            super().__init__()
            self.prefix, self.capacity, self.length = prefix, capacity, 0

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            import torch

            b, h, _, d = key_states.shape
            self.keys = torch.empty(b, h, self.capacity, d, dtype=key_states.dtype, device=key_states.device)
            self.values = torch.empty(b, h, self.capacity, value_states.shape[-1], dtype=value_states.dtype,
                                      device=value_states.device)
            self.device = key_states.device
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"shared-prefix cache: {end} suffix tokens > its capacity {self.capacity}")
            self.keys[:, :, self.length:end] = key_states
            self.values[:, :, self.length:end] = value_states
            self.length = end
            return self.keys[:, :, :end], self.values[:, :, :end]

        def prefix_length(self) -> int:
            return 0 if self.prefix is None else self.prefix[0].shape[-2]

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.prefix_length() + self.length + query_length, 0

        def get_seq_length(self) -> int:
            return self.prefix_length() + self.length

        def get_max_length(self) -> int:
            return -1

        def select(self, index: Any) -> None:
            if self.is_initialized:
                self.keys = self.keys.index_select(0, index)
                self.values = self.values.index_select(0, index)

    class PrefixCache(Cache):
        def select(self, index: Any) -> None:
            """Keep only the rows `index` (a 1-D long tensor) of the suffix buffers."""
            for layer in self.layers:
                layer.select(index)

        @property
        def suffix_length(self) -> int:
            return self.layers[0].length

    return SuffixLayer, PrefixCache


def build_cache(prefix: list[tuple[Any, Any]] | None, layers: int, capacity: int) -> Any:
    """A transformers `Cache` for one batch: `prefix` the shared prefix's (keys, values) per layer (batch 1) or
    None, and room for `capacity` suffix tokens per row (the widest rest of a prompt + the new tokens)."""
    layer_cls, cache_cls = _classes()
    return cache_cls(layers=[layer_cls(prefix[i] if prefix else None, capacity) for i in range(layers)])


def _partial(q: Any, k: Any, v: Any, mask: Any | None, scale: float) -> tuple[Any, Any]:
    """softmax(q k^T * scale) v and its log-sum-exp over these keys: q [..., M, d], k/v [..., N, d], mask
    broadcastable to [..., M, N] (True: visible; every query sees at least one key)."""
    import torch

    s = torch.matmul(q, k.transpose(-1, -2)).float().mul_(scale)
    if mask is not None:
        s.masked_fill_(~mask, float("-inf"))
    m = s.amax(-1, keepdim=True)
    p = s.sub_(m).exp_()
    total = p.sum(-1, keepdim=True)
    out = torch.matmul(p.to(v.dtype), v).float().div_(total)
    return out, m.add_(total.log_())


def _merge(a: tuple[Any, Any], b: tuple[Any, Any]) -> Any:
    import torch

    (oa, la), (ob, lb) = a, b
    lse = torch.logaddexp(la, lb)
    return oa.mul_((la - lse).exp_()).add_(ob.mul_((lb - lse).exp_()))


def cascade_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """Attention of `query` [B, H, q, d] over the layer's shared prefix and the rows' suffix keys/values
    `key`/`value` [B, kv heads, S, d] (as the cache's `update` returned them) under `attention_mask`, a
    boolean [B, 1, q, S] built by the decode loop. Returns [B, q, H, d] as transformers' implementations do."""
    import torch

    cache = getattr(_active, "cache", None)
    if cache is None:
        raise RuntimeError(f"{ATTENTION} attention runs only inside agentkd.models.shared_prefix.attention()")
    b, heads, q, d = query.shape
    kv, width = key.shape[1], key.shape[-2]
    g = heads // kv
    scale = scaling if scaling is not None else d ** -0.5
    prefix = cache.layers[module.layer_idx].prefix
    # GQA: the g query heads of a KV head side by side ([B, kv, g, q, d] -> [B, kv, g*m, d] per chunk), so no
    # KV head is repeated; query positions in chunks, so the scores of a long prefill stay under _CHUNK
    # elements, each chunk against the keys up to its last query only (the rest are masked: causal)
    qg = query.reshape(b, kv, g, q, d)
    step = max(1, _CHUNK // (b * heads * max(width, prefix[0].shape[-2] if prefix else 0)))
    outs = []
    for i in range(0, q, step):
        m = min(step, q - i)
        end = width - q + i + m
        qc = qg[:, :, :, i:i + m].reshape(b, kv, g * m, d)
        mask = attention_mask[:, :, None, i:i + m, :end].expand(b, 1, g, m, end).reshape(b, 1, g * m, end)
        out, lse = _partial(qc, key[:, :, :end], value[:, :, :end], mask, scale)
        if prefix is not None:
            # every row's queries against the one copy of the prefix: [1, kv, B*g*m, d]
            pk, pv = prefix
            po, pl = _partial(qc.transpose(0, 1).reshape(1, kv, b * g * m, d), pk, pv, None, scale)
            out = _merge((out, lse), (po.reshape(kv, b, g * m, -1).transpose(0, 1),
                                      pl.reshape(kv, b, g * m, 1).transpose(0, 1)))
        outs.append(out.reshape(b, kv, g, m, -1))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=3)
    out = out.to(query.dtype).reshape(b, heads, q, -1).transpose(1, 2).contiguous()
    return out, None
