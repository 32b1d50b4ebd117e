"""A run interrupted after a checkpoint resumes: the step count continues and the resumed steps see the same data
(their losses equal an uninterrupted run's). Every shipped recipe validates; unknown keys name their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train_data import make_dataset

REPO = Path(__file__).resolve().parents[1]


def config(tiny_qwen, ds, out, **kw):
    from agentkd.train.config import TrainConfig

    return TrainConfig(model=str(tiny_qwen), dataset=str(ds), out=str(out), max_steps=6, save_steps=3, lr=1e-2,
                       batch_size=2, grad_accum=1, lora={"r": 4, "alpha": 8}, progress=False, **kw)


def losses(out: Path) -> dict[int, float]:
    import json

    return {r["step"]: r["loss"] for r in json.loads((out / "log_history.json").read_text()) if "loss" in r}


def test_interrupted_run_resumes_and_continues_the_step_count(tiny_qwen, tmp_path):
    from agentkd.core.config import ConfigError
    from agentkd.train.run import train

    ds = make_dataset(tmp_path / "ds", n_train=12, n_val=2)
    straight = train(config(tiny_qwen, ds, tmp_path / "straight"))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(config(tiny_qwen, ds, out), resume=True)
    train(config(tiny_qwen, ds, out), stop_after=3)
    assert (out / "checkpoints" / "checkpoint-3").is_dir()
    assert not (out / "adapter_model.safetensors").exists()  # interrupted: no final adapter yet
    with pytest.raises(ConfigError, match="--resume"):
        train(config(tiny_qwen, ds, out))  # a plain rerun must not silently restart over the checkpoints
    ck3 = out / "checkpoints" / "checkpoint-3" / "trainer_state.json"
    stamp = ck3.stat().st_mtime_ns
    train(config(tiny_qwen, ds, out), resume=True)
    assert (out / "adapter_model.safetensors").exists()
    assert ck3.stat().st_mtime_ns == stamp  # steps 1-3 were not run again (a fresh run rewrites checkpoint-3)
    assert (out / "checkpoints" / "checkpoint-6").is_dir()
    resumed, ref = losses(out), losses(straight)
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):  # same data order and RNG after the resume
        assert resumed[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-5), (step, resumed, ref)


def recipe_files() -> list[Path]:
    return sorted(p for p in (REPO / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)


def test_every_recipe_validates_and_the_paper_settings_hold():
    from agentkd.core.config import load_recipe

    files = recipe_files()
    assert len(files) >= 9
    paper = {}
    for f in files:
        configs = load_recipe(f)
        assert configs, f
        if "paper" in f.parts:
            paper[f.stem] = configs["train"]
    for size in ("0.5b", "1.5b", "3b", "7b"):
        for kind, length in (("agent", 10240), ("cot", 4096)):
            c = paper[f"{kind}-qwen2.5-{size}"]
            assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.target_modules) == (64, 128, 0.05, "all-linear")
            assert (c.lr, c.epochs, c.batch_size * c.grad_accum, c.max_length, c.precision, c.seed) == \
                (2e-4, 2, 8, length, "bf16", 42)
            assert c.model.lower() == f"qwen/qwen2.5-{size}-instruct"
    assert paper["agent-qwen2.5-dpo"].method == "dpo"


def test_unknown_train_key_names_its_path(tmp_path):
    from agentkd.core.config import ConfigError, load_recipe

    with pytest.raises(ConfigError, match=r"quickstart.yaml: train\.lora\.rank: unknown key"):
        load_recipe(REPO / "recipes" / "quickstart.yaml", ["train.lora.rank=8"])


def test_a_checkpoint_half_written_when_the_run_died_is_skipped(tmp_path):
    from agentkd.train.run import last_checkpoint

    ck = tmp_path / "checkpoints"
    assert last_checkpoint(tmp_path) is None
    for step, state in ((2, '{"global_step": 2}'), (4, None), (6, '{"global_st')):  # 4: no state, 6: torn
        d = ck / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
    (ck / "checkpoint-10.tmp").mkdir()  # not a checkpoint name
    assert last_checkpoint(tmp_path) == str(ck / "checkpoint-2")
    (ck / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
    assert last_checkpoint(tmp_path) == str(ck / "checkpoint-4")
