"""SFT on a tiny real Qwen2: the loss falls, the trained tokens are exactly the assistant tokens, padding-free
batches train the same tokens with the same loss, and bad input fails in one line before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.train_data import make_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "agent")


def cfg(tiny_qwen, dataset, out, **kw):
    from agentkd.train.config import TrainConfig

    base = dict(model=str(tiny_qwen), dataset=str(dataset), out=str(out), max_steps=12, lr=2e-2, batch_size=4,
                grad_accum=1, warmup_ratio=0.0, lr_scheduler="constant", lora={"r": 8, "alpha": 16},
                progress=False)
    return TrainConfig(**{**base, **kw})


def assistant_token_mask(tokenizer, messages) -> tuple[list[int], list[int]]:
    """Oracle, independent of generation markers: render the conversation as text, find each assistant
    message's content (and the <|im_end|> closing it) in that text, tokenize with offsets, and mark the tokens
    that lie inside those spans."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans, pos = [], 0
    for m in messages:
        start = text.index(m["content"], pos)
        end = start + len(m["content"])
        if m["role"] == "assistant":
            assert text.startswith("<|im_end|>", end)
            spans.append((start, end + len("<|im_end|>")))
        pos = end
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= a and b <= e for s, e in spans)) for a, b in enc["offset_mapping"]]
    return enc["input_ids"], mask


def test_trained_tokens_are_the_assistant_tokens_and_the_loss_falls(tiny_qwen, dataset, tmp_path):
    from datasets import load_from_disk

    from agentkd.curate.templates import load_student_tokenizer
    from agentkd.train.device import resolve_placement
    from agentkd.train.sft import build_sft_trainer

    config = cfg(tiny_qwen, dataset, tmp_path / "out", padding_free="on")
    tok = load_student_tokenizer(str(tiny_qwen))
    trainer = build_sft_trainer(config, Path(tiny_qwen), tok, resolve_placement("cpu", "auto"), tmp_path / "out", [])
    assert trainer.agentkd_padding_free  # batches are concatenated without pads

    raw = load_from_disk(str(dataset))["train"]
    prepared = trainer.train_dataset
    assert len(prepared) == len(raw)
    expected_trained = []
    for ex, row in zip(raw, prepared, strict=True):
        ids, mask = assistant_token_mask(tok, ex["messages"])
        assert row["input_ids"] == ids
        trained = [int(lbl != -100) for lbl in row["labels"]]
        assert trained == mask, "trained positions differ from the assistant tokens"
        assert sum(mask) > 0
        expected_trained.extend(t for t, m in zip(ids, mask, strict=True) if m)

    # the collated batches (padding-free: one row per batch) carry exactly those labels, nothing more
    seen = []
    for batch in trainer.get_train_dataloader():
        assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
        lab = batch["labels"][0]
        seen.extend(lab[lab != -100].tolist())
    assert sorted(seen) == sorted(expected_trained)

    result = trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) == 12 and result.global_step == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses


def test_padding_free_batch_has_the_padded_batch_s_loss(tiny_qwen, dataset, tmp_path):
    """Same examples, same labels: the padding-free forward gives the padded forward's loss (sequences do
    not attend to each other), so the throughput option does not change what is learned."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from agentkd.curate.templates import load_student_tokenizer
    from agentkd.train.device import resolve_placement
    from agentkd.train.sft import build_sft_trainer

    tok = load_student_tokenizer(str(tiny_qwen))
    trainer = build_sft_trainer(cfg(tiny_qwen, dataset, tmp_path / "o", padding_free="on"), Path(tiny_qwen), tok,
                                resolve_placement("cpu", "auto"), tmp_path / "o", [])
    rows = [trainer.train_dataset[i] for i in range(4)]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # varied lengths: the padded batch has pads
    model = trainer.model.eval()
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(rows)
    free = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    assert int((padded["labels"] != -100).sum()) == int((free["labels"] != -100).sum())
    with torch.no_grad():  # the loss exactly as the trainer computes it in a training step
        a, b = trainer.compute_loss(model, padded), trainer.compute_loss(model, free)
    assert torch.allclose(a, b, atol=1e-5), (a, b)


def test_bad_input_fails_in_one_line_before_any_model_loads(tiny_qwen, dataset, tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    from agentkd.core.config import ConfigError
    from agentkd.train import sft
    from agentkd.train.run import train

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(sft, "load_base_model", boom)
    no_messages = tmp_path / "nomsg"
    DatasetDict({"train": Dataset.from_list([{"text": "hi"}])}).save_to_disk(str(no_messages))
    cases = {
        "messages": cfg(tiny_qwen, no_messages, tmp_path / "a"),
        "does not exist": cfg(tmp_path / "missing-model", dataset, tmp_path / "b"),
        "needs a GPU": cfg(tiny_qwen, dataset, tmp_path / "c", precision="bf16", device="cpu"),
        "dataset folder does not exist": cfg(tiny_qwen, tmp_path / "nope", tmp_path / "d"),
    }
    for needle, config in cases.items():
        with pytest.raises(ConfigError) as e:
            train(config)
        assert needle in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 2


def test_template_without_generation_markers_is_refused(tiny_qwen, dataset, tmp_path):
    from agentkd.core.errors import AgentkdError
    from agentkd.train.run import train

    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                     "{% endfor %}")
    with pytest.raises(AgentkdError) as e:
        train(cfg(tiny_qwen, dataset, tmp_path / "t", template=str(plain)))
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


def test_cli_train_writes_adapter_curve_and_provenance(tiny_qwen, dataset, tmp_path):
    import subprocess
    import sys

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"train:\n  model: {tiny_qwen}\n  dataset: {dataset}\n  max_steps: 2\n  batch_size: 2\n"
                      f"  grad_accum: 1\n  lora: {{r: 4, alpha: 8}}\n")
    out = tmp_path / "m"
    r = subprocess.run([sys.executable, "-m", "agentkd", "train", str(recipe), "--set", f"train.out={out}",
                        "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("adapter_config.json", "adapter_model.safetensors", "agentkd_provenance.json",
                 "training_curve.png", "recipe.yaml", "dataset_card.md"):
        assert (out / name).exists(), name
    prov = json.loads((out / "agentkd_provenance.json").read_text())
    card = json.loads((dataset / "card.json").read_text())
    assert prov["dataset_sha256"] == card["sha256"] and prov["base_model"] == str(tiny_qwen)
    assert prov["recipe"]["max_steps"] == 2 and prov["agentkd_version"]
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([sys.executable, "-m", "agentkd", "train", str(recipe), "--set", "train.bogus=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "train.bogus" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
