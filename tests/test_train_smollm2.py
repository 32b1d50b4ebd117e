"""The embedded SmolLM2-135M with the quickstart recipe: a few LoRA steps on CPU, then the adapter reloads with
stock PEFT and generates, the merged model's logits equal base+adapter's, and `agentkd serve --adapter` serves it
over real HTTP on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import start_server

from tests.train_data import make_dataset

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "system", "content": "You solve tasks by writing Python code."},
          {"role": "user", "content": "Task: What is the capital of France?"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from agentkd.core.config import load_recipe
    from agentkd.train.run import train

    tmp = tmp_path_factory.mktemp("smol")
    ds = make_dataset(tmp / "ds", n_train=4, n_val=1, max_steps=0)
    cfg = load_recipe(REPO / "recipes" / "quickstart.yaml", [
        f"train.dataset={ds}", f"train.out={tmp / 'adapter'}", "train.max_steps=2", "train.lr=5e-3",
        "train.batch_size=2", "train.grad_accum=1", "train.max_length=256", "train.progress=false"])["train"]
    assert cfg.model == "embedded:smollm2-135m" and cfg.finetune == "lora"
    out = train(cfg)
    from agentkd.models.embedded import prepare_embedded

    return out, prepare_embedded("smollm2-135m", progress=False)


def test_adapter_reloads_with_stock_peft_generates_and_merges(trained, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentkd.train.merge import merge_adapter

    adapter, base_path = trained
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    tok = AutoTokenizer.from_pretrained(base_path)
    enc = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(**enc).logits
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32),
                                     str(adapter)).eval()
    with torch.no_grad():
        peft_logits = peft(**enc).logits
        gen = peft.generate(**enc, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > enc["input_ids"].shape[1]
    assert (peft_logits - base_logits).abs().max() > 1e-3  # the adapter changes the model...
    merged_dir = merge_adapter(adapter, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        merged_logits = merged(**enc).logits
    assert torch.allclose(merged_logits, peft_logits, atol=1e-3), (merged_logits - peft_logits).abs().max()
    assert not any("lora" in k for k in merged.state_dict())


def test_agentkd_serve_adapter_answers_over_http(trained):
    import httpx
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, base_path = trained
    proc, url = start_server("embedded:smollm2-135m", "--adapter", str(adapter), timeout_s=240)
    try:
        r = httpx.post(f"{url}/chat/completions", timeout=120, json={
            "model": "embedded:smollm2-135m", "messages": PROMPT, "temperature": 0, "max_tokens": 8})
        assert r.status_code == 200, r.text
        served = r.json()["choices"][0]["message"]["content"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    tok = AutoTokenizer.from_pretrained(base_path)
    enc = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32),
                                     str(adapter)).eval()
    with torch.no_grad():
        ids = peft.generate(**enc, max_new_tokens=8, do_sample=False)[0, enc["input_ids"].shape[1]:]
    local = tok.decode(ids, skip_special_tokens=True)
    assert served.strip() == local.strip() and served.strip()
