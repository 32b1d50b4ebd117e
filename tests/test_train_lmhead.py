"""The LM head over the loss-carrying positions only (agentkd/train/lmhead.py) trains exactly what the stock
path trains: on a padded batch of agent trajectories, the loss, TRL's logged metrics and every LoRA gradient
equal those of TRL's own fused head and of transformers' plain loss, with and without gradient accumulation's
`num_items_in_batch`. The whole-epoch length grouping yields every example once, in batches of similar
lengths, in an order fixed by (seed, epoch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train_data import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "agent", n_train=12, n_val=0, max_steps=4)


def build(tiny_qwen, dataset, out):
    from agentkd.curate.templates import load_student_tokenizer
    from agentkd.train.config import TrainConfig
    from agentkd.train.device import resolve_placement
    from agentkd.train.sft import build_sft_trainer

    cfg = TrainConfig(model=str(tiny_qwen), dataset=str(dataset), out=str(out), max_steps=2, batch_size=4,
                      grad_accum=1, lora={"r": 8, "alpha": 16, "dropout": 0.0}, progress=False)
    tok = load_student_tokenizer(str(tiny_qwen))
    return build_sft_trainer(cfg, Path(tiny_qwen), tok, resolve_placement("cpu", "auto"), out, []), tok


def loss_and_grads(trainer, batch, **kw):
    model = trainer.model
    model.zero_grad()
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(model, dict(batch), **kw)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k in ("entropy", "mean_token_accuracy")}
    return loss.detach(), grads, metrics


def test_kept_positions_head_gives_the_stock_loss_metrics_and_lora_gradients(tiny_qwen, dataset, tmp_path):
    import torch
    from peft import PeftModel
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    trainer, tok = build(tiny_qwen, dataset, tmp_path / "o")
    assert trainer.agentkd_kept_positions_head
    model = trainer.model.train()
    assert isinstance(model, PeftModel)
    base = model.get_base_model()
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA B starts at zero (and so A's gradient): give every adapter weight a value
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    rows = [trainer.train_dataset[i] for i in range(4)]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # varied lengths: pads at the end of the short ones
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    kept = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < kept < 0.8 * batch["labels"].numel()  # most positions carry no loss

    ours = base.forward
    out = model(**batch, fused_lm_head=True)
    seen, todo = set(), [out.log_probs.grad_fn]
    while todo:  # the loss runs through our head, not TRL's
        fn = todo.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            todo.extend(f for f, _ in fn.next_functions)
    assert "KeptLogProbBackward" in {type(f).__name__ for f in seen}
    cases = [{}, {"num_items_in_batch": torch.tensor(3 * kept)}]  # the latter: one of 3 accumulated batches
    for kw in cases:
        base.forward = ours
        a = loss_and_grads(trainer, batch, **kw)
        base.forward = base.agentkd_trl_forward  # TRL's fused head, every position scored on CPU
        b = loss_and_grads(trainer, batch, **kw)
        base.forward = ours
        assert torch.allclose(a[0], b[0], atol=1e-6, rtol=1e-5), (a[0], b[0])
        assert a[1].keys() == b[1].keys() and any("lora_A" in n for n in a[1])
        for n in a[1]:
            assert torch.allclose(a[1][n], b[1][n], atol=1e-7, rtol=1e-4), n
            assert a[1][n].abs().sum() > 0, n
        assert a[2].keys() == {"entropy", "mean_token_accuracy"}
        assert a[2]["entropy"] == pytest.approx(b[2]["entropy"], rel=1e-5)
        assert a[2]["mean_token_accuracy"] == pytest.approx(b[2]["mean_token_accuracy"], abs=1e-9)

    # and transformers' own loss (full logits, its cross-entropy with num_items_in_batch)
    model.zero_grad()
    ref = model(**batch, num_items_in_batch=torch.tensor(3 * kept)).loss
    ref.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, a[1][n], atol=1e-7, rtol=1e-4), n
    assert torch.allclose(ref.detach(), a[0], atol=1e-6, rtol=1e-5)


def test_kept_positions_head_keeps_an_all_masked_batch_differentiable(tiny_qwen, dataset, tmp_path):
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    trainer, tok = build(tiny_qwen, dataset, tmp_path / "o")
    rows = [{**trainer.train_dataset[i]} for i in range(2)]
    for r in rows:
        r["labels"] = [-100] * len(r["labels"])
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    loss = trainer.compute_loss(trainer.model.train(), batch)
    loss.backward()
    assert float(loss) == 0.0 and torch.isfinite(loss)


def test_epoch_length_grouping_is_a_seeded_permutation_of_similar_length_batches():
    import random

    from agentkd.train.grouping import EpochLengthGroupedSampler, grouped_order

    rng = random.Random(0)
    lengths = [rng.randint(50, 3000) for _ in range(203)]
    sampler = EpochLengthGroupedSampler(lengths, 8, seed=42)
    first = list(sampler)
    assert sorted(first) == list(range(203)) and len(sampler) == 203
    assert first == list(sampler)  # same epoch, same order (what --resume relies on)
    sampler.set_epoch(1)
    assert list(sampler) != first and sorted(sampler) == list(range(203))
    assert grouped_order(lengths, 8, 7, 0) != first
    batches = [first[i:i + 8] for i in range(0, 203, 8)]
    assert len(batches[-1]) == 203 % 8 and max(lengths[i] for i in batches[-1]) == max(lengths)  # longest, last
    pad = sum(8 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches[:-1])
    assert pad < 0.05 * sum(lengths)  # sorted over the epoch: little padding (random batches: ~40%)
    starts = [lengths[b[0]] for b in batches[:-1]]
    assert starts != sorted(starts)  # but the batches come in random order
