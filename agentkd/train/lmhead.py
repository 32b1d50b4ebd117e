"""The LM head over the loss-carrying positions only, on devices where TRL's fused head scores them all.

TRL 1.16's `SFTTrainer` patches the model with a fused LM head (`trl.trainer.utils.add_fused_lm_head`): the
loss, `entropy` and `mean_token_accuracy` come from per-token log-probabilities computed in tiles, without the
full logits. With Triton (CUDA/XPU) it projects only the positions whose label is not -100; elsewhere (CPU,
MPS) it projects every position, and its torch fallback makes about ten full passes over each [4096, 32768]
tile, forward and backward alike. With assistant-only loss most positions of an agent trajectory (system
prompt, task, observations, pads) carry no loss, and with a small student the LM head over a 49k-152k
vocabulary is most of a step's work (measured on tools/bench/train.py: 2/3 of a plain TRL step on CPU).

`add_kept_positions_head` wraps that patched forward: where TRL would score every position, it gathers the
hidden states at the kept positions and computes their log-probability, entropy and top-1 hit in one
projection (`KeptLogProb`, below), then scatters them back to the (batch, seq - 1) shape TRL's
`compute_loss` reads. The loss TRL builds from them (sum of -log p over kept positions ÷ `num_items_in_batch`
or their count), its metrics (averaged over kept positions), and the gradients are those of the stock path
(tests/test_train_lmhead.py compares loss, metrics and every LoRA gradient). Anything else TRL's head does
(Triton devices, shifted labels under sequence parallelism, MoE router loss, logit scaling or soft-capping)
goes to TRL's forward unchanged.
"""

from __future__ import annotations

import functools
import types
from typing import Any

# Rows projected at once. The forward holds two [ROWS, vocab] fp32 buffers, the backward one.
ROWS = 1024
# Up to this many kept (position × vocab) probabilities are kept from the forward for the backward (4 bytes
# each: 1 GiB); past it the backward recomputes them block by block, as TRL's kernel does, to bound memory.
KEEP_ELEMENTS = 1 << 28
SCALED_LOGITS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling")


def _block(hidden, weight, bias, lo: int, hi: int):
    """The logits z = hidden @ weight.T (+ bias) of rows lo:hi, in fp32."""
    z = hidden[lo:hi].float() @ weight.float().t()
    if bias is not None:
        z += bias.float()
    return z


def _make_function():
    import torch

    class KeptLogProb(torch.autograd.Function):
        """(log p(target), entropy, target is argmax) of softmax(hidden @ weight.T + bias), per row.

        Written here, not torch's cross_entropy + log_softmax + argmax (measured, 700 rows × 49k vocab on 2 CPU
        threads: 1.0 s for cross_entropy alone, 1.8 s with entropy and accuracy from log_softmax, 3.8 s for
        TRL's chunked kernel): one projection and four passes over each row block give all three, and the
        backward reuses the forward's exp(z - max) (the softmax up to a per-row scale) in place."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets):
            ctx.set_materialize_grads(False)
            n = hidden.shape[0]
            keep = n * weight.shape[0] <= KEEP_ELEMENTS
            logp, ent, top1, sums, kept = [], [], [], [], []
            for lo in range(0, max(n, 1), ROWS):  # one (empty) block when no position is kept
                hi = min(lo + ROWS, n)
                z = _block(hidden, weight, bias, lo, hi)
                arg = z.argmax(-1)  # first maximum, as in TRL's and transformers' token accuracy
                zmax = z.gather(1, arg[:, None])
                target = z.gather(1, targets[lo:hi, None]).squeeze(1)
                z.sub_(zmax)
                e = z.exp()
                s = e.sum(-1)
                # sum_j e_j (z_j - max): a batched row-wise dot, no temporary [rows, vocab] product
                ez = torch.bmm(e.unsqueeze(1), z.unsqueeze(2)).view(-1)
                del z
                log_s = s.log()
                logp.append(target - zmax.squeeze(1) - log_s)
                ent.append(log_s - ez / s)  # -sum p log p with p = e / s
                top1.append(arg == targets[lo:hi])
                sums.append(s)
                if keep:
                    kept.append(e)
            ctx.keep = keep
            ctx.save_for_backward(hidden, weight, bias, targets, torch.cat(sums), *kept)
            logp, ent, top1 = torch.cat(logp), torch.cat(ent), torch.cat(top1)
            ctx.mark_non_differentiable(ent, top1)  # metrics: TRL logs them detached
            return logp, ent, top1

        @staticmethod
        def backward(ctx, g_logp, *_):
            hidden, weight, bias, targets, sums, *kept = ctx.saved_tensors
            need_h, need_w, need_b = ctx.needs_input_grad[:3]
            if g_logp is None:
                return None, None, None, None
            g = g_logp.float()
            grads = [torch.zeros_like(hidden, dtype=torch.float32) if need_h else None,
                     torch.zeros_like(weight, dtype=torch.float32) if need_w else None,
                     torch.zeros_like(bias, dtype=torch.float32) if need_b else None]
            w = weight.float()
            for i, lo in enumerate(range(0, max(hidden.shape[0], 1), ROWS)):
                hi = min(lo + ROWS, hidden.shape[0])
                if ctx.keep:
                    e = kept[i]
                else:
                    z = _block(hidden, weight, bias, lo, hi)
                    e = z.sub_(z.amax(-1, keepdim=True)).exp_()
                # d log p_y / dz_j = 1[j = y] - p_j, p_j = e_j / s: the gradient tile overwrites e (used once)
                e.mul_((-g[lo:hi] / sums[lo:hi]).unsqueeze(1))
                rows = torch.arange(hi - lo, device=e.device)
                e[rows, targets[lo:hi]] += g[lo:hi]
                if need_h:
                    grads[0][lo:hi] = e @ w
                if need_w:
                    grads[1].addmm_(e.t(), hidden[lo:hi].float())
                if need_b:
                    grads[2] += e.sum(0)
            h, wt, b = (None if x is None else x.to(ref.dtype) for x, ref in zip(grads, (hidden, weight, bias),
                                                                                   strict=True))
            return h, wt, b, None

    return KeptLogProb


@functools.cache
def kept_log_prob() -> Any:
    return _make_function()


def triton_scores_kept_only(device: Any) -> bool:
    """Whether TRL's fused head already projects only the kept positions there (its Triton path)."""
    from transformers.utils import is_triton_available

    return device.type in ("cuda", "xpu") and is_triton_available()


def supported(model: Any) -> bool:
    text = model.config.get_text_config()
    return text is model.config and not any(getattr(text, k, None) is not None for k in SCALED_LOGITS)


def add_kept_positions_head(model: Any) -> bool:
    """Wrap the forward TRL's `add_fused_lm_head` put on `model` (the transformers model, under PEFT).
    Returns False (and changes nothing) for models whose LM head TRL scales or soft-caps."""
    if not supported(model):
        return False
    from trl.trainer.utils import FusedCausalLMOutput

    trl_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        own = fused_lm_head and labels is not None and not args and "shift_labels" not in kwargs \
            and not kwargs.get("output_router_logits") and not getattr(self.config, "output_router_logits", False)
        lm_head = self.get_output_embeddings()
        if not own or triton_scores_kept_only(lm_head.weight.device):
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        num_items = kwargs.pop("num_items_in_batch", None)
        kwargs["use_cache"] = False
        hidden = self.base_model(**kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:].to(lm_head.weight.device)
        mask = labels != -100
        logp, ent, top1 = kept_log_prob().apply(hidden.to(lm_head.weight.device)[mask], lm_head.weight,
                                                lm_head.bias, labels[mask])
        # masked_scatter keeps a batch without kept positions connected to the graph (a zero loss, not an error)
        log_probs = logp.new_zeros(mask.shape).masked_scatter(mask, logp)
        entropy = ent.new_zeros(mask.shape).masked_scatter(mask, ent)
        is_top1 = top1.new_zeros(mask.shape).masked_scatter(mask, top1)
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items is None else num_items)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, is_top1=is_top1,
                                   label_mask=mask)

    model.forward = types.MethodType(forward, model)
    model.agentkd_trl_forward = trl_forward  # the tests compare the two
    return True
