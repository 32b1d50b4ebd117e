"""The forward passes of one batch: prefill its prompts, then one token per live row per step, with finished
rows dropped from the batch as they end (agentkd/models/batching.py runs the loop and picks the tokens).

transformers' `generate` keeps every row of a batch until its longest row ends: in the quickstart teacher's
8-row batches six rows ended within 26 of 128 steps and still cost their share of each step. Here each step
runs only the rows still generating.

Two implementations of the same three calls (`prefill`, `step`, `select`):
- `SharedPrefixBatch` (models whose attention agentkd/models/shared_prefix.py supports): the prefix all rows
  share is prefilled once, at batch 1, with the model's own attention; the rows' rests and every decode step
  run cascade attention over that one prefix copy and per-row suffix buffers.
- `PlainBatch` (any other model): a transformers `DynamicCache` with the prefix's cache copied to every row,
  a 2-D attention mask and positions that follow it.
In both, prompts are left-padded between the prefix and each row's rest ([prefix][pad...][rest]) and each
row's positions count only its own tokens, so a row sees what it would see alone.
"""

from __future__ import annotations

from typing import Any


def _last_logits(out: Any) -> Any:
    return out.logits[:, -1]


class _Batch:
    """`prompts` (token ids), the first `shared` tokens of which all rows have in common, and room for up to
    `new_tokens` generated tokens a row."""

    def __init__(self, model: Any, prompts: list[list[int]], shared: int, new_tokens: int, *, device: str,
                 pad_id: int, cache_kw: str):
        self.model, self.prompts, self.shared, self.new_tokens = model, prompts, shared, new_tokens
        self.device, self.pad_id, self.cache_kw = device, pad_id, cache_kw


class SharedPrefixBatch(_Batch):

    def prefill(self) -> Any:
        import torch

        from agentkd.models.shared_prefix import attention, build_cache

        prefix = None
        if self.shared:
            ids = torch.tensor([self.prompts[0][: self.shared]], device=self.device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            prefix = [(layer.keys, layer.values) for layer in getattr(out, self.cache_kw).layers]
        rests = [p[self.shared:] for p in self.prompts]
        width = max(len(r) for r in rests)
        pad = torch.tensor([width - len(r) for r in rests], device=self.device)
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rests], device=self.device)
        col = torch.arange(width, device=self.device)
        positions = (col[None, :] - pad[:, None]).clamp_(min=0) + self.shared
        # causal, and only the row's own tokens; a pad query sees itself (no fully masked row, no NaN)
        causal = col[None, :] <= col[:, None]
        mask = causal[None] & ((col[None, None, :] >= pad[:, None, None]) | torch.eye(width, dtype=torch.bool,
                                                                                   device=self.device)[None])
        config = self.model.config
        layers = (config.get_text_config(decoder=True) if hasattr(config, "get_text_config")
                  else config).num_hidden_layers
        self.cache = build_cache(prefix, layers, width + self.new_tokens)
        self.pad, self.next_pos = pad, positions[:, -1] + 1
        with attention(self.model, self.cache):
            out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask[:, None],
                             **{self.cache_kw: self.cache}, use_cache=True, logits_to_keep=1)
        return _last_logits(out)

    def step(self, tokens: Any) -> Any:
        import torch

        from agentkd.models.shared_prefix import attention

        seen = self.cache.suffix_length + 1
        mask = torch.arange(seen, device=self.device)[None, :] >= self.pad[:, None]
        with attention(self.model, self.cache):
            out = self.model(input_ids=tokens[:, None], position_ids=self.next_pos[:, None],
                             attention_mask=mask[:, None, None], **{self.cache_kw: self.cache}, use_cache=True,
                             logits_to_keep=1)
        self.next_pos = self.next_pos + 1
        return _last_logits(out)

    def select(self, index: Any) -> None:
        self.cache.select(index)
        self.pad, self.next_pos = self.pad[index], self.next_pos[index]


class PlainBatch(_Batch):

    def prefill(self) -> Any:
        import torch

        shared, prompts = self.shared, self.prompts
        width = max(len(p) for p in prompts) - shared
        ids = torch.tensor([p[:shared] + [self.pad_id] * (width - len(p) + shared) + p[shared:] for p in prompts],
                           device=self.device)
        self.mask = torch.tensor([[1] * shared + [0] * (width - len(p) + shared) + [1] * (len(p) - shared)
                                  for p in prompts], device=self.device)
        kw: dict[str, Any] = {"use_cache": True, "logits_to_keep": 1}
        cache = None
        if shared:
            out = self.model(input_ids=ids[:1, :shared], **kw)
            cache = getattr(out, self.cache_kw)
            cache.batch_repeat_interleave(len(prompts))
        positions = (self.mask.cumsum(-1) - 1).clamp_(min=0)
        out = self.model(input_ids=ids[:, shared:], attention_mask=self.mask, position_ids=positions[:, shared:],
                         **{self.cache_kw: cache}, **kw)
        self.cache = getattr(out, self.cache_kw)
        self.next_pos = positions[:, -1] + 1
        return _last_logits(out)

    def step(self, tokens: Any) -> Any:
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.next_pos[:, None],
                         **{self.cache_kw: self.cache}, use_cache=True, logits_to_keep=1)
        self.cache = getattr(out, self.cache_kw)
        self.next_pos = self.next_pos + 1
        return _last_logits(out)

    def select(self, index: Any) -> None:
        self.cache.batch_select_indices(index)
        self.mask, self.next_pos = self.mask[index], self.next_pos[index]


# MKL's sgemm (torch 2.13 CPU) runs x @ W^T for 2-3 rows no faster than for 8: on the 2-vCPU VM one
# 2-row decode step of the embedded SmolLM2 took 157 ms against ~105 ms for 1 row, while the same product as
# (W @ x^T)^T took 115 ms (linears alone: 71 vs 39 ms per step). Only the product's layout changes.
_SKINNY = (2, 3)


def _skinny_forward(self: Any, x: Any) -> Any:
    import torch

    rows = x.numel() // x.shape[-1] if x.dim() else 0
    if _SKINNY[0] <= rows <= _SKINNY[1] and not torch.is_grad_enabled():
        y = torch.mm(self.weight, x.reshape(rows, -1).t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)
    return torch.nn.functional.linear(x, self.weight, self.bias)


def use_skinny_linears(model: Any) -> None:
    """CPU models: give every plain `nn.Linear` of `model` the 2-3 row product above (this model object
    only; other inputs, and anything with gradients, take `F.linear`)."""
    import types

    import torch

    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight.device.type == "cpu":
            module.forward = types.MethodType(_skinny_forward, module)
