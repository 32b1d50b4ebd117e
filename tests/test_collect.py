"""Collection runs against a fault-injecting stand-in teacher and against `agentkd serve`: retries,
crash-safe resume after SIGKILL, budget stop and resume, FTP provenance end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import killed, local_backend

from agentkd.agent.parse import first_paragraph
from agentkd.collect import CollectConfig, collect
from agentkd.collect.runner import collect_async
from agentkd.core.jsonl import iter_jsonl
from agentkd.engine import RunSummary
from agentkd.testing.standin import StandinServer, answer_for


def write_tasks(path: Path, n: int) -> Path:
    path.write_text(json.dumps({"metadata": {}, "examples": [
        {"id": f"q{i}", "question": f"Synthetic question number {i}?", "answer": "x"} for i in range(n)]}))
    return path


def task_questions(path: Path) -> list[str]:
    """The questions in a tasks file, for the stand-in teacher to recognise in its requests."""
    return [r["question"] for r in json.loads(path.read_text())["examples"]]


def base_cfg(url: str, tasks: Path, **over) -> dict:
    cfg = {
        "tasks": {"path": str(tasks)},
        "teacher": {"model": "openai/standin", "api_base": url, "timeout_s": 1.0},
        "client": {"backoff_s": 0.02, "max_backoff_s": 1.5, "retries": 8},
        "agent": {"ftp": True, "prompt": "codeact_student"},
        "tools": {"search": None},
        "sandbox": {"backend": "auto"},
        "samples": 2,
        "concurrency": 8,
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def stored(run: Path) -> list[dict]:
    return list(iter_jsonl(run / "trajectories.jsonl"))


def assert_one_per_key_and_correct(run: Path, n_tasks: int, samples: int) -> list[dict]:
    rows = stored(run)
    keys = Counter((r["task"]["id"], r["provenance"]["sample_index"]) for r in rows)
    assert len(keys) == n_tasks * samples and set(keys.values()) == {1}
    for r in rows:  # nothing that failed was stored as an answer
        assert r["status"] == "ok" and r["final_answer"] == answer_for(r["task"]["question"])
    raw = (run / "trajectories.jsonl").read_bytes()
    assert raw.endswith(b"\n") and all(json.loads(line) for line in raw.splitlines())
    return rows


def test_faults_are_retried_and_never_stored_as_answers(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.json", 8)
    faults = {"429": 0.08, "500": 0.08, "timeout": 0.05, "malformed": 0.08}
    with StandinServer(faults=faults, seed=1, timeout_sleep_s=2.5, questions=task_questions(tasks)) as srv:
        # first without retries: some episodes fail; they go to failed.jsonl, not trajectories.jsonl
        s1 = collect(CollectConfig.model_validate(base_cfg(srv.url, tasks, client={"retries": 0})), tmp_path / "run",
                     progress=False)
        assert s1.failed_infra > 0 and s1.stored + s1.failed_infra == 16
        for r in stored(tmp_path / "run"):
            assert r["status"] == "ok" and r["final_answer"] == answer_for(r["task"]["question"])
        failed = list(iter_jsonl(tmp_path / "run" / "failed.jsonl"))
        assert len(failed) == s1.failed_infra and all(f["status"] == "error" for f in failed)
        # rerun with retries: the failed episodes are retried, finished ones skipped
        n_before = len(srv.requests)
        s2 = collect(CollectConfig.model_validate(base_cfg(srv.url, tasks)), tmp_path / "run", progress=False)
        kinds = Counter(r["fault"] for r in srv.requests)
        second = srv.requests[n_before:]
    assert s2.skipped_already_done == s1.stored and s2.failed_infra == 0 and s2.total_stored == 16
    assert all(kinds[k] > 0 for k in faults), kinds
    # every fault the stand-in injected in the second run was retried exactly once, counted by its cause
    injected = Counter(r["fault"] for r in second if r["fault"])
    assert all(injected[k] > 0 for k in faults), injected
    assert s2.retries == dict(injected), (s2.retries, injected)
    # a 429's Retry-After (1 s; the backoff alone would be 0.02-0.04 s) was waited for before the same request
    # came again
    waits = []
    for i, r in enumerate(second):
        if r["fault"] == "429":
            body = json.dumps(r["body"], sort_keys=True)
            again = next(x for x in second[i + 1:] if json.dumps(x["body"], sort_keys=True) == body)
            waits.append(again["t"] - r["t"])
    assert waits and min(waits) >= 0.95, waits
    rows = assert_one_per_key_and_correct(tmp_path / "run", 8, 2)
    assert {r["provenance"]["prefix_mode"] for r in rows} == {"prefill"}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["total_stored"] == 16


def test_ftp_prefix_comes_from_the_first_pass_and_reaches_the_server(tmp_path):
    """The prefix is the first paragraph of the recorded first-pass answer, and the server received it as the
    assistant prefill of the first agent turn (its request log shows the message and the vLLM flags)."""
    tasks = write_tasks(tmp_path / "tasks.json", 3)
    with StandinServer() as srv:
        cfg = CollectConfig.model_validate(base_cfg(srv.url, tasks, samples=1, concurrency=3))
        summary = collect(cfg, tmp_path / "run", progress=False)
        requests = list(srv.requests)
    assert summary.stored == 3
    for traj in stored(tmp_path / "run"):
        p, first = traj["provenance"], traj["steps"][0]
        cot = p["extra"]["ftp_first_pass"]
        assert p["prefix_text"] == first_paragraph(cot) and p["prefix_text"] and p["prefix_text"] != cot.strip()
        # the first agent request of this episode: its last message is the prefilled assistant turn
        mine = [r["body"] for r in requests
                if any(traj["task"]["question"] in m["content"] for m in r["body"]["messages"])]
        ftp_pass, step0 = mine[0], mine[1]
        assert ftp_pass["messages"][-1]["role"] == "user"
        assert step0["messages"][-1] == {"role": "assistant", "content": "Thought: " + p["prefix_text"]}
        assert step0.get("continue_final_message") is True and step0.get("add_generation_prompt") is False
        # the logged turn is the prefill followed by what the server continued with
        assert first["model_output"].startswith("Thought: " + p["prefix_text"])
        assert len(first["model_output"]) > len("Thought: " + p["prefix_text"])


def _cli(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agentkd", "collect", str(recipe), "--out", str(out), "--quiet",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_midway_then_resume(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.json", 12)
    run = tmp_path / "run"
    with StandinServer(latency_s=0.15, questions=task_questions(tasks)) as srv:
        recipe = tmp_path / "r.yaml"
        recipe.write_text(yaml.safe_dump({"collect": base_cfg(srv.url, tasks, samples=2, concurrency=3)}))
        proc = _cli(recipe, run)
        deadline = time.time() + 120
        while time.time() < deadline and len(stored(run)) < 6:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first = {(r["task"]["id"], r["provenance"]["sample_index"]) for r in stored(run)}
        assert 6 <= len(first) < 24, "kill should land mid-way"
        n_before = len(srv.requests)
        bodies_before = [json.dumps(r["body"], sort_keys=True) for r in srv.requests]
        proc = _cli(recipe, run)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        second = srv.requests[n_before:]
    assert_one_per_key_and_correct(run, 12, 2)
    # finished (task, sample) pairs cost zero new teacher calls: sample s of a task calls with seeds
    # s + 1000 * step (and s + 99000 for the FTP pass), so a request's seed names its sample
    def episode_of(request: dict) -> tuple[str, int]:
        question = next(m["content"] for m in request["body"]["messages"] if m["role"] == "user")
        task = next(f"q{i}" for i in range(12) if f"Synthetic question number {i}?" in question)
        return task, request["body"]["seed"] % 1000

    assert {episode_of(r) for r in srv.requests[:n_before]} >= first  # the mapping sees the first run's episodes
    assert not [episode_of(r) for r in second if episode_of(r) in first]
    # ...and interrupted episodes replayed their cached calls: at most the calls in flight at the kill repeat
    repeated = [r for r in second if json.dumps(r["body"], sort_keys=True) in bodies_before]
    assert len(repeated) <= 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_already_done"] == len(first) and summary["total_stored"] == 24


def test_budget_stop_and_resume(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.json", 10)
    run = tmp_path / "run"
    with StandinServer(questions=task_questions(tasks)) as srv:
        # ~30-60 prompt words per call at $1000/Mtok → a few cents per call
        prices = {"price_in_per_mtok": 1000.0, "price_out_per_mtok": 1000.0, "budget_usd": 0.5}
        recipe = tmp_path / "r.yaml"
        recipe.write_text(yaml.safe_dump({"collect": base_cfg(srv.url, tasks, samples=1, concurrency=2,
                                                               client=prices)}))
        proc = _cli(recipe, run)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 3, err
        assert "budget" in err and "raise collect.client.budget_usd" in err
        s1 = RunSummary.model_validate_json((run / "summary.json").read_text())
        assert s1.stopped == "budget" and 0 < s1.total_stored < 10
        per_call = max(r["steps"][0]["cost_usd"] for r in stored(run))
        assert 0.5 <= s1.cost_usd_total <= 0.5 + 2 * per_call  # stops at the limit (2 calls in flight at most)
        calls_1 = len(srv.requests)
        # same budget: nothing new is bought
        proc = _cli(recipe, run)
        proc.communicate(timeout=300)
        assert proc.returncode == 3 and len(srv.requests) == calls_1
        # raised budget: resumes to completion
        proc = _cli(recipe, run, "--set", "collect.client.budget_usd=100")
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert_one_per_key_and_correct(run, 10, 1)
    s3 = RunSummary.model_validate_json((run / "summary.json").read_text())
    assert s3.stopped is None and s3.cost_usd_total > s1.cost_usd_total


@pytest.mark.slow
def test_end_to_end_with_agentkd_serve_and_ftp(smollm2_server, shared_bench, tmp_path):
    """Acceptance: `agentkd serve embedded:smollm2-135m` as the teacher, `agentkd collect --ftp` on 8 tasks."""
    recipe = tmp_path / "serve.yaml"
    recipe.write_text(yaml.safe_dump({"collect": {
        "tasks": {"suite": "hotpotqa-train", "limit": 8},
        "teacher": {"model": "openai/embedded:smollm2-135m", "api_base": smollm2_server,
                    "sampling": {"temperature": 0.7, "max_tokens": 24}},
        "agent": {"prompt": "codeact_student", "max_steps": 1, "ftp_max_tokens": 40},
        "tools": {"search": None},
        "concurrency": 4,
    }}))
    env = {**os.environ, "AGENTKD_DATA": str(shared_bench)}
    r = subprocess.run([sys.executable, "-m", "agentkd", "collect", str(recipe), "--ftp", "--out",
                        str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = stored(tmp_path / "run")
    assert len(rows) == 8 and len({x["task"]["id"] for x in rows}) == 8
    for x in rows:
        p = x["provenance"]
        assert x["status"] in ("ok", "max_steps") and x["task"]["source"] == "hotpotqa-train"
        assert p["model"] == "openai/embedded:smollm2-135m" and p["api_base"] == smollm2_server
        assert p["provider"] == "openai-compatible" and p["prefix_mode"] == "prefill" and p["sampling"]["temperature"] == 0.7
        assert p["seed"] == 0 and p["sandbox_backend"] and p["prompt_id"] and p["agentkd_version"]
        assert p["tools"] == ["final_answer"] and p["tools_config_hash"] and p["finished_at"] >= p["started_at"]
        prefix = p["prefix_text"]
        # the prefix is the first paragraph of the model's own first-pass answer...
        assert prefix and prefix == first_paragraph(p["extra"]["ftp_first_pass"])
        assert x["steps"][0]["prefix"] == prefix and x["steps"][0]["model_output"].startswith("Thought: " + prefix)
    # ...and the client sent it to the server as the assistant prefill of each episode's first agent turn
    with sqlite3.connect(tmp_path / "run" / "cache.sqlite") as db:
        sent = [json.loads(r[0]) for r in db.execute("SELECT request FROM requests")]
    for x in rows:
        prefix = "Thought: " + x["provenance"]["prefix_text"]
        assert any(r.get("prefill") == prefix and any(x["task"]["question"] in m["content"] for m in r["messages"])
                   for r in sent)


def _sandbox_cgroups() -> set[Path]:
    """The cgroups of the sandboxes this process started (their names carry its pid)."""
    return {d for root in (Path("/sys/fs/cgroup/pids/agentkd"), Path("/sys/fs/cgroup/agentkd")) if root.is_dir()
            for d in root.iterdir() if d.name.startswith(f"sb-{os.getpid()}-")}


def test_no_sandbox_runs_after_collect_returns_and_all_are_cleaned_up(tmp_path):
    import threading

    from agentkd.sandbox.cgroup import Cgroup

    probe = Cgroup.create(64, 8)
    if probe is None:
        pytest.skip("no writable cgroup hierarchy here: sandbox processes cannot be listed by cgroup")
    probe.remove()
    backend = local_backend()  # Docker's containers live in Docker's cgroups (and are killed by its API)
    if backend is None:
        pytest.skip("no isolating local sandbox backend works here")
    tasks = write_tasks(tmp_path / "tasks.json", 8)
    seen_dirs: set[Path] = set()
    seen_pids: set[int] = set()
    done = threading.Event()

    def watch() -> None:  # every process that ever ran in one of this run's sandboxes
        while not done.is_set():
            for d in _sandbox_cgroups():
                seen_dirs.add(d)
                try:
                    seen_pids.update(int(p) for p in (d / "cgroup.procs").read_text().split())
                except OSError:
                    pass
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # all 16 episodes run at once and end together: their sandboxes are all still open when the run ends
    with StandinServer(actions=2, latency_s=0.2) as srv:
        cfg = CollectConfig.model_validate(base_cfg(srv.url, tasks, agent={"ftp": False}, samples=2, concurrency=16,
                                                    sandbox={"backend": backend}))


        async def run_and_look() -> tuple[dict, list[int]]:
            summary = await collect_async(cfg, tmp_path / "run", progress=False)
            return summary, [p for p in set(seen_pids) if not killed(p)]  # at once, before any await

        summary, alive = asyncio.run(run_and_look())
    done.set()
    watcher.join()
    assert summary.stored == 16
    assert len(seen_dirs) >= 16 and seen_pids  # one sandbox per episode
    # every process of every episode's sandbox was sent SIGKILL before collect() returned...
    assert alive == []
    # ...and the background clean-up removes their cgroups shortly after
    deadline = time.time() + 10
    while time.time() < deadline and any(d.exists() for d in seen_dirs):
        time.sleep(0.05)
    assert not any(d.exists() for d in seen_dirs)
