"""Training throughput: agentkd's SFT trainer ÷ plain TRL defaults, side by side on one agent dataset.

    python tools/bench/train.py [--model tiny|embedded:smollm2-135m] [--examples 96] [--batch 8] [--repeat 1]
                                [--threads 2] [--padding-free auto|on|off]

Both train one epoch of the same curated agent trajectories (0-6 code steps with observations, so lengths
vary a lot) on CPU, with the same LoRA, batch size, learning rate and `assistant_only_loss`:

- "plain" is `SFTTrainer(args=SFTConfig(assistant_only_loss=True, ...))` with TRL's defaults otherwise:
  random order, batches padded to their longest example, and TRL's fused LM head, which off Triton devices
  projects every position (pads and the system/user/observation tokens that carry no loss too);
- "agentkd" is `agentkd.train.sft.build_sft_trainer`: batches grouped by length over the whole epoch
  (agentkd/train/grouping.py), and the LM head, its loss and TRL's entropy/accuracy metrics computed at the
  loss-carrying positions only (agentkd/train/lmhead.py; tests/test_train_lmhead.py checks that the loss,
  the metrics and every LoRA gradient equal TRL's and transformers' own). Padding-free batches only with
  flash-attention varlen kernels (`--padding-free on` forces them: on CPU, sdpa computes the whole
  concatenated row's attention, measured 2x slower than the grouped padded batches).

Before timing, the script checks that both train exactly the same tokens: the same (input_ids, labels) per
example and the same multiset of loss-carrying tokens over the epoch's batches. It prints real (non-pad)
tokens per second of each, the ratio (target >= 1.3), the pad share of each, and peak RSS (agentkd's, taken
before plain's first run, and the process's). Runs alternate (agentkd, plain, agentkd, ...) so machine load
hits both alike; the median of `--repeat` runs is the result. On a machine shared with other work, torch's
threads wait on each other: `--threads 1` is the steadier measure there.

Most of the gain on CPU is TRL's LM head (2/3 of a plain step): on CUDA with Triton, TRL already projects
only the loss-carrying positions, and there the gain is the grouping's (pad share 40% → 6.5% here).

`--model tiny` (default) is a randomly initialised 4-layer Llama (hidden 64) with SmolLM2's tokenizer and
chat template: the LM head over SmolLM2's 49k vocabulary dominates per-token cost, as in a small student.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def tiny_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from agentkd.models.embedded import prepare_embedded

    tok = AutoTokenizer.from_pretrained(prepare_embedded("smollm2-135m", progress=False))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def plain_trainer(cfg, model_path: Path, tok, out: Path):
    """TRL's defaults: what a user gets from the TRL docs' SFT + LoRA example."""
    from trl import SFTConfig, SFTTrainer

    from agentkd.train.device import resolve_placement
    from agentkd.train.sft import common_args, load_base_model, lora_config, sft_splits

    placement = resolve_placement("cpu", "auto")
    train_ds, _ = sft_splits(Path(cfg.dataset))
    args = SFTConfig(**common_args(cfg, placement, out, has_eval=False), max_length=cfg.max_length,
                     assistant_only_loss=True)
    return SFTTrainer(model=load_base_model(model_path, placement), args=args, train_dataset=train_ds,
                      processing_class=tok, peft_config=lora_config(cfg))


def ours_trainer(cfg, model_path: Path, tok, out: Path):
    from agentkd.train.device import resolve_placement
    from agentkd.train.sft import build_sft_trainer

    return build_sft_trainer(cfg, model_path, tok, resolve_placement("cpu", "auto"), out, [])


def epoch_tokens(trainer, pad_id: int) -> tuple[list[int], int, int]:
    """(sorted loss-carrying token ids, real tokens, tokens fed incl. pads) over one epoch of batches."""
    trained, real, fed = [], 0, 0
    for b in trainer.get_train_dataloader():
        lab = b["labels"]
        trained.extend(lab[lab != -100].tolist())
        fed += b["input_ids"].numel()
        real += int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
    return sorted(trained), real, fed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny, or a model spec such as embedded:smollm2-135m")
    ap.add_argument("--examples", type=int, default=96)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--padding-free", default="auto", choices=["auto", "on", "off"])
    a = ap.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from agentkd.curate.templates import load_student_tokenizer
    from agentkd.train.config import TrainConfig
    from agentkd.train.run import resolve_model_path
    from tests.train_data import make_dataset

    torch.set_num_threads(a.threads)
    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    tmp = Path(tempfile.mkdtemp(prefix="agentkd-bench-train-"))
    model_path = tiny_model(tmp / "model") if a.model == "tiny" else resolve_model_path(a.model)
    ds = make_dataset(tmp / "ds", n_train=a.examples, n_val=0, max_steps=6, seed=7)
    steps = a.examples // a.batch
    cfg = TrainConfig(model=str(model_path), dataset=str(ds), batch_size=a.batch, grad_accum=1, max_steps=steps,
                      max_length=4096, lora={"r": 16, "alpha": 32}, progress=False, save_steps=10**6,
                      report_to="none", padding_free=a.padding_free)
    tok = load_student_tokenizer(str(model_path))
    build = {"agentkd": ours_trainer, "plain": plain_trainer}

    # same tokens: per example (order-free) and per epoch of batches
    first = {name: fn(cfg, model_path, tok, tmp / name) for name, fn in build.items()}
    rows = {name: sorted((tuple(r["input_ids"]), tuple(r["labels"])) for r in t.train_dataset)
            for name, t in first.items()}
    assert rows["agentkd"] == rows["plain"], "the two trainers prepared different examples or masks"
    stats = {name: epoch_tokens(t, tok.pad_token_id) for name, t in first.items()}
    assert stats["agentkd"][0] == stats["plain"][0], "the two trainers train different tokens"
    assert stats["agentkd"][1] == stats["plain"][1]
    real = stats["plain"][1]
    print(f"model {a.model}, {a.examples} examples, batch {a.batch}, {steps} steps/epoch; "
          f"padding-free: {first['agentkd'].agentkd_padding_free}")
    print(f"same tokens: yes ({len(stats['plain'][0])} loss-carrying, {real} real tokens per epoch)")
    for name in build:
        fed = stats[name][2]
        print(f"  {name:8s} tokens fed {fed:7d}  pad share {1 - real / fed:6.1%}")
    del first

    runs: dict[str, list[float]] = {name: [] for name in build}
    for i in range(a.repeat):
        for name, fn in build.items():
            trainer = fn(cfg, model_path, tok, tmp / f"{name}-{i}")
            t0 = time.perf_counter()
            trainer.train()
            runs[name].append(real / (time.perf_counter() - t0))
            del trainer
            if i == 0 and name == "agentkd":
                ours_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = {name: statistics.median(v) for name, v in runs.items()}
    for name, v in runs.items():
        print(f"  {name:8s} real tokens/s: median {med[name]:8.1f}  (min {min(v):.1f}, max {max(v):.1f})")
    ratio = med["agentkd"] / med["plain"]
    print(f"agentkd ÷ plain TRL: {ratio:.2f}x  (target >= 1.3)")
    print(f"peak RSS: agentkd {ours_rss:.0f} MiB, process (both) "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
