"""The preference stage: DPO on the dataset's exported pairs, from an SFT adapter, moves the chosen/rejected
margin; the result is one stock PEFT adapter with its provenance."""

from __future__ import annotations

import json

import pytest

from tests.train_data import make_dataset


def margin(model, tok, pairs) -> float:
    from agentkd.train.dpo import sequence_logps

    total = 0.0
    for p in pairs:
        total += sequence_logps(model, tok, p["prompt"], p["chosen"]) - sequence_logps(model, tok, p["prompt"],
                                                                                        p["rejected"])
    return total / len(pairs)


def test_dpo_from_sft_adapter_moves_the_margin(tiny_qwen, tmp_path):
    import torch
    from datasets import load_from_disk
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agentkd.core.config import ConfigError
    from agentkd.curate.templates import load_student_tokenizer
    from agentkd.train.config import TrainConfig
    from agentkd.train.run import train

    ds = make_dataset(tmp_path / "ds", n_train=8, n_val=2, n_pairs=6, max_steps=1)
    common = dict(model=str(tiny_qwen), dataset=str(ds), batch_size=2, grad_accum=1, lora={"r": 4, "alpha": 8},
                  progress=False, warmup_ratio=0.0, lr_scheduler="constant")
    sft = train(TrainConfig(**common, out=str(tmp_path / "sft"), max_steps=2, lr=1e-2))
    with pytest.raises(ConfigError, match=r"train\.adapter"):
        train(TrainConfig(**common, out=str(tmp_path / "x"), method="dpo"))
    dpo = train(TrainConfig(**common, out=str(tmp_path / "dpo"), method="dpo", adapter=str(sft), max_steps=6,
                            lr=2e-2, dpo={"beta": 0.1}))
    prov = json.loads((dpo / "agentkd_provenance.json").read_text())
    assert prov["method"] == "dpo" and prov["adapter"] == str(sft)
    assert not (dpo / "ref").exists()  # only the trained adapter is saved, not TRL's frozen reference copy

    tok = load_student_tokenizer(str(tiny_qwen))
    pairs = list(load_from_disk(str(ds / "pairs"))["train"])

    def load(adapter):
        base = AutoModelForCausalLM.from_pretrained(str(tiny_qwen), dtype=torch.float32)
        return PeftModel.from_pretrained(base, str(adapter)).eval()

    before, after = margin(load(sft), tok, pairs), margin(load(dpo), tok, pairs)
    assert after > before + 0.5, (before, after)
    logged = [r["rewards/margins"] for r in json.loads((dpo / "log_history.json").read_text()) if "rewards/margins" in r]
    assert logged and max(logged[-2:]) > logged[0]
