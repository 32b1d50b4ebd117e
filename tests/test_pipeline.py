"""Issue 13 end to end: trajectories collected from a stand-in teacher over real HTTP → `agentkd score` →
`agentkd curate` → `agentkd curate check-masks` for the embedded SmolLM2 and a tiny Qwen2 with TRL's
Qwen2.5 training template → `datasets.load_from_disk` → one step of stock TRL `SFTTrainer(assistant_only_loss=True)`."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from agentkd.cli import main
from agentkd.collect import CollectConfig, collect
from agentkd.core.jsonl import iter_jsonl
from agentkd.testing.standin import StandinServer, answer_for

pytestmark = pytest.mark.slow


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["agentkd", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """8 tasks × 2 samples from the stand-in teacher: 6 tasks whose gold is what it answers, 2 it gets wrong."""
    root = tmp_path_factory.mktemp("pipeline")
    qs = [f"Which synthetic entity is number {i}?" for i in range(8)]
    examples = [{"id": f"q{i}", "question": q, "answer": answer_for(q) if i < 6 else "something else"}
                for i, q in enumerate(qs)]
    (root / "tasks.json").write_text(json.dumps({"metadata": {}, "examples": examples}))
    cfg = {"tasks": {"path": str(root / "tasks.json")},
           "teacher": {"model": "openai/standin", "api_base": None, "timeout_s": 5.0},
           "agent": {"ftp": True}, "tools": {"search": None}, "samples": 2, "concurrency": 8}
    with StandinServer(questions=qs) as srv:
        cfg["teacher"]["api_base"] = srv.url
        summary = collect(CollectConfig.model_validate(cfg), root / "run", progress=False)
    assert summary.total_stored == 16
    return root / "run"


def test_collect_score_curate_check_masks_train(run, monkeypatch, capsys, tiny_qwen25, tmp_path):
    raw = (run / "trajectories.jsonl").read_bytes()
    code, out = cli(monkeypatch, capsys, "score", run, "-q")
    assert code == 0, out
    scores = list(iter_jsonl(run / "scores.jsonl"))
    assert len(scores) == 16
    assert Counter(s["correct"] for s in scores) == {1.0: 12, 0.0: 4}

    ds = tmp_path / "ds"
    code, out = cli(monkeypatch, capsys, "curate", run, "--out", ds, "--set", "curate.validation_fraction=0.34",
                    "-q")
    assert code == 0, out
    assert (run / "trajectories.jsonl").read_bytes() == raw  # the raw run is never written

    from datasets import load_from_disk

    dd = load_from_disk(str(ds))
    train, val, rejected = dd["train"], dd["validation"], dd["rejected"]
    # the two samples of a task are the same action sequence: dedupe keeps one per task
    assert len(train) + len(val) == 6 and len(rejected) == 4
    assert not set(train["task_key"]) & set(val["task_key"]) and len(val) == 2
    first = train[0]["messages"]
    assert [m["role"] for m in first[:3]] == ["system", "user", "assistant"]
    teacher_system = next(iter_jsonl(run / "trajectories.jsonl"))["system_prompt"]
    assert first[0]["content"].startswith("Solve the task step by step") and first[0]["content"] != teacher_system
    assert all(m["content"].startswith("Observation:") for m in first[3:-1:2]) and first[-1]["role"] == "assistant"
    assert "final_answer" in first[-1]["content"]
    verdicts = Counter(d["verdict"] for d in iter_jsonl(ds / "decisions.jsonl"))
    assert verdicts == {"train": 4, "validation": 2, "rejected": 4, "duplicate": 6}, verdicts
    card = json.loads((ds / "card.json").read_text())
    assert card["splits"]["train"]["rows"] == 4 and len(card["sha256"]) == 64

    for model in ("embedded:smollm2-135m", tiny_qwen25):
        code, out = cli(monkeypatch, capsys, "curate", "check-masks", ds, "--model", model, "--num-proc", "1")
        assert code == 0, out
        assert "⟦" in out  # the printed example marks its trained spans

    # stock TRL trains one step on it, loss only on the assistant turns, with the template check-masks chose
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from agentkd.curate.templates import load_student_tokenizer

    tok = load_student_tokenizer(str(tiny_qwen25))
    assert tok.agentkd_template_source == "trl:qwen2_5_training.jinja"
    args = SFTConfig(output_dir=str(tmp_path / "out"), assistant_only_loss=True, max_steps=1,
                     per_device_train_batch_size=2, report_to=[], save_strategy="no", logging_steps=1,
                     use_cpu=True, dataset_num_proc=1)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_qwen25), args=args,
                         train_dataset=train, processing_class=tok)
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss > 0
    for labels in trainer.train_dataset["labels"]:  # the system/user prompt carries no loss, the answer does
        assert labels[0] == -100 and labels[-1] != -100 and 0 < sum(x != -100 for x in labels) < len(labels) / 2
