"""Issue 16, the whole loop: `agentkd run` with a stand-in API teacher on 127.0.0.1 and the tiny Qwen2 student
for train + eval. Stages run in order into one run folder; training stopped at a checkpoint resumes from it;
summary.json/md carry the numbers; a rerun calls no model and skips every stage; a changed eval config
reruns only the evaluations."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml

from agentkd.core.jsonl import iter_jsonl
from agentkd.core.types import Trajectory
from agentkd.pipeline import run_recipe
from agentkd.pipeline.stages import StageStopped
from agentkd.testing.standin import StandinServer, answer_for

pytestmark = pytest.mark.slow

TRAIN_Q = [f"Which synthetic entity is number {i}?" for i in range(6)]
TEST_Q = [f"Which held-out entity is number {i}?" for i in range(3)]


def tasks_file(path: Path, qs: list[str], prefix: str) -> Path:
    path.write_text(json.dumps({"metadata": {}, "examples": [
        {"id": f"{prefix}{i}", "question": q, "answer": answer_for(q)} for i, q in enumerate(qs)]}))
    return path


def recipe(root: Path, url: str, student: Path) -> Path:
    data = {
        "collect": {"tasks": {"path": str(tasks_file(root / "train.json", TRAIN_Q, "t"))},
                    "teacher": {"model": "openai/standin", "api_base": url, "timeout_s": 5.0},
                    "agent": {"ftp": True, "max_steps": 2}, "tools": {"search": None}, "concurrency": 4},
        "score": {"scorer": "qa_em_f1"},
        "curate": {"validation_fraction": 0.34, "max_tokens": 1024},
        "train": {"model": str(student), "max_steps": 4, "save_steps": 2, "batch_size": 1, "grad_accum": 1,
                  "lr": 1e-2, "max_length": 512, "lora": {"r": 4, "alpha": 8}, "progress": False, "device": "cpu"},
        "evaluate": {"benchmarks": [{"path": str(tasks_file(root / "test.json", TEST_Q, "h"))}],
                     "student": {"model": str(student), "device": "cpu",
                                 "sampling": {"temperature": 0.0, "max_tokens": 16}},
                     "agent": {"max_steps": 2, "sag": {"n": 2, "temperature": 0.7}}, "tools": {"search": None},
                     "concurrency": 3, "bootstrap_resamples": 200},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(data))
    return root / "recipe.yaml"


@pytest.fixture(scope="module")
def loop(tmp_path_factory, tiny_qwen25):
    root = tmp_path_factory.mktemp("run")
    with StandinServer(questions=TRAIN_Q + TEST_Q) as srv:
        rec, out = recipe(root, srv.url, tiny_qwen25), root / "out"
        lines: list[str] = []
        with pytest.raises(StageStopped, match="checkpoint-2") as stop:
            run_recipe(rec, out=out, progress=False, train_stop_after=2, echo=lines.append)
        assert stop.value.exit_code == 130
        stamps = json.loads((out / "stamps.json").read_text())
        assert [stamps[s]["complete"] for s in ("collect", "score", "curate", "train")] == [True, True, True, False]
        assert stamps["score"]["detail"]["scored_new"] == 6  # scored by the score stage, before curate
        ck2 = out / "model" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
        ck2_mtime = ck2.stat().st_mtime_ns
        assert not (out / "model" / "adapter_model.safetensors").exists()
        partial = json.loads((out / "summary.json").read_text())  # what finished is summed up already
        assert "checkpoint-2" in partial["stopped"] and partial["collect"]["trajectories"] == 6
        assert "dataset" in partial and partial["eval"] == {}
        first_requests = len(srv.requests)
        res = run_recipe(rec, out=out, progress=False, echo=lines.append)  # resumes training, then evaluates
        yield {"srv": srv, "recipe": rec, "out": out, "res": res, "ck2": ck2, "ck2_mtime": ck2_mtime,
               "first_requests": first_requests, "lines": lines}


def test_stages_in_order_and_training_resumes_from_its_checkpoint(loop):
    res, out = loop["res"], loop["out"]
    assert [(o.name, o.status) for o in res.stages] == [
        ("collect", "skipped"), ("score", "skipped"), ("curate", "skipped"), ("train", "resumed"), ("eval-base", "ran"),
        ("eval-trained", "ran")]
    assert next(o for o in res.stages if o.name == "train").detail["resumed_from"] == "checkpoint-2"
    assert loop["ck2"].stat().st_mtime_ns == loop["ck2_mtime"]  # steps 1-2 were not trained again
    assert len(loop["srv"].requests) == loop["first_requests"]  # the teacher was not asked again
    prov = json.loads((out / "model" / "agentkd_provenance.json").read_text())
    assert prov["metrics"]["global_step"] == 4
    card = json.loads((out / "dataset" / "card.json").read_text())
    assert prov["dataset"] == str(out / "dataset") and prov["dataset_sha256"] == card["sha256"]  # wired by agentkd run
    for d in ("collect/trajectories.jsonl", "dataset/card.json", "model/adapter_config.json",
              "eval-base/results.json", "eval-trained/results.json", "summary.md", "summary.json"):
        assert (out / d).exists(), d
    # the trained evaluation loaded the adapter; the base one did not
    base, trained = (json.loads((out / f"eval-{k}" / "results.json").read_text()) for k in ("base", "trained"))
    assert base["adapter"] is None and trained["adapter"] == str(out / "model")
    assert base["model"] == trained["model"]
    assert any("train (resuming)" in ln for ln in loop["lines"])


def test_summary_numbers(loop):
    out = loop["out"]
    s = json.loads((out / "summary.json").read_text())
    c = s["collect"]
    assert c["trajectories"] == 6 and c["success_rate"] == 1.0 and c["scored"] == 6  # the stand-in answers the gold
    card = json.loads((out / "dataset" / "card.json").read_text())
    assert s["dataset"]["splits"]["train"] == card["splits"]["train"]["rows"] > 0
    assert s["dataset"]["splits"]["validation"] == card["splits"]["validation"]["rows"]
    hist = json.loads((out / "model" / "log_history.json").read_text())
    assert s["train"]["steps"] == 4 and s["train"]["train_loss"] > 0
    assert s["train"]["last_loss"] == [h["loss"] for h in hist if "loss" in h][-1]
    for name in ("eval-base", "eval-trained"):
        m = s["eval"][name]["methods"]["agent"]
        results = json.loads((out / name / "results.json").read_text())
        assert m["accuracy"] == results["methods"]["agent"]["benchmarks"]["test"]["accuracy"]
        trajs = [Trajectory.model_validate(o) for o in iter_jsonl(out / name / "agent" / "trajectories.jsonl")]
        steps = [st for t in trajs for st in t.steps]
        good = sum(st.code is not None and st.error is None for st in steps)
        w = m["well_formed_actions"]
        assert w["steps"] == len(steps) > 0 and w["good_steps"] == good and w["rate"] == round(good / len(steps), 6)
        assert m["accuracy_ci95"] is not None and w["ci95"] is not None
        assert w["ci95"][0] <= w["rate"] <= w["ci95"][1]
    md = (out / "summary.md").read_text()
    assert "| eval-trained |" in md and "well-formed actions" in md and "6 trajectories over 6 tasks" in md
    assert (out / "collect" / "view.html").exists() and (out / "eval-trained" / "agent" / "view.html").exists()


def test_rerun_calls_no_model_and_skips_every_stage(loop, monkeypatch, capsys):
    from agentkd.cli import main

    srv, out = loop["srv"], loop["out"]
    before = len(srv.requests)
    traj = (out / "eval-trained" / "agent" / "trajectories.jsonl").read_bytes()
    t0 = time.perf_counter()
    monkeypatch.setattr(sys, "argv", ["agentkd", "run", str(loop["recipe"]), "--out", str(out), "-q"])
    with pytest.raises(SystemExit) as done:  # the CLI (typer exits 0 at the end)
        main()
    assert done.value.code in (0, None)
    took = time.perf_counter() - t0
    printed = capsys.readouterr()
    assert printed.err.count("up to date, skipped") == 6
    assert printed.out.startswith("# agentkd run:") and "## Held-out evaluation" in printed.out  # the summary itself
    assert f"summary: {out / 'summary.md'}" in printed.out and f"report:  {out / 'eval-trained' / 'report.md'}" \
        in printed.out and f"viewer:  {out / 'collect' / 'view.html'}" in printed.out
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert {v["status"] for v in stages.values()} == {"skipped"} and len(stages) == 6
    assert len(srv.requests) == before
    assert (out / "eval-trained" / "agent" / "trajectories.jsonl").read_bytes() == traj
    assert took < 15, took


def test_changed_eval_config_reruns_only_evaluation(loop):
    out = loop["out"]
    adapter = (out / "model" / "adapter_model.safetensors").stat().st_mtime_ns
    res = run_recipe(loop["recipe"], ["evaluate.agent.max_steps=1"], out=out, progress=False, echo=lambda s: None)
    assert [(o.name, o.status) for o in res.stages] == [
        ("collect", "skipped"), ("score", "skipped"), ("curate", "skipped"), ("train", "skipped"), ("eval-base", "rerun"),
        ("eval-trained", "rerun")]
    assert (out / "model" / "adapter_model.safetensors").stat().st_mtime_ns == adapter
    for name in ("eval-base", "eval-trained"):  # the new config's episodes, not the old ones resumed
        assert yaml.safe_load((out / name / "agent" / "config.yaml").read_text())["evaluate"]["agent"]["max_steps"] == 1
        assert len(list(iter_jsonl(out / name / "agent" / "trajectories.jsonl"))) == len(TEST_Q)
    assert json.loads((out / "summary.json").read_text())["stages"]["eval-trained"]["status"] == "rerun"


def test_killed_during_training_resumes_from_its_last_checkpoint(tmp_path, tiny_qwen25):
    """SIGKILL of `agentkd run` (no clean stop) while it trains; the rerun continues from the newest complete
    checkpoint, keeps the finished stages and ends with the full step count."""
    import os
    import signal
    import subprocess

    with StandinServer(questions=TRAIN_Q + TEST_Q) as srv:
        rec, out = recipe(tmp_path, srv.url, tiny_qwen25), tmp_path / "out"
        data = yaml.safe_load(rec.read_text())
        data["train"].update(max_steps=30, save_steps=2, lr=1e-3)
        del data["evaluate"]
        rec.write_text(yaml.safe_dump(data))
        proc = subprocess.Popen([sys.executable, "-m", "agentkd", "run", str(rec), "--out", str(out), "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        ck = out / "model" / "checkpoints"
        try:
            deadline = time.monotonic() + 600
            while not (ck / "checkpoint-4" / "trainer_state.json").exists():
                assert proc.poll() is None and time.monotonic() < deadline, "training never reached checkpoint-4"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        assert not (out / "model" / "adapter_model.safetensors").exists()
        done = {int(p.name.split("-")[1]) for p in ck.iterdir() if (p / "trainer_state.json").exists()}
        requests = len(srv.requests)
        res = run_recipe(rec, out=out, progress=False, echo=lambda s: None)
        status = {o.name: o.status for o in res.stages}
        assert status["collect"] == status["curate"] == "skipped" and status["train"] == "resumed", status
        train = next(o for o in res.stages if o.name == "train")
        assert train.detail["resumed_from"] == f"checkpoint-{max(done)}"
        assert len(srv.requests) == requests  # the teacher was not asked again
        prov = json.loads((out / "model" / "agentkd_provenance.json").read_text())
        assert prov["metrics"]["global_step"] == 30


def test_action_rate_counts_parsed_actions_that_ran(tmp_path):
    from agentkd.core.types import Step, Task
    from agentkd.pipeline.summary import action_rate

    def traj(i, steps):
        return Trajectory(task=Task(id=f"t{i}", question="q", answer="a"), steps=[
            Step(index=j, model_output="x", code=code, error=err) for j, (code, err) in enumerate(steps)])

    rows = [traj(0, [("print(1)", None), ("1/0", "ZeroDivisionError"), (None, "no code block")]),
            traj(1, [("final_answer(2)", None)])]
    (tmp_path / "trajectories.jsonl").write_text("".join(t.model_dump_json() + "\n" for t in rows))
    r = action_rate(tmp_path, seed=0, n_resamples=200)
    assert (r["good_steps"], r["steps"], r["rate"], r["tasks"]) == (2, 4, 0.5, 2)
    assert r["ci95"] == [0.333333, 1.0]  # over the two tasks' rates 1/3 and 1
