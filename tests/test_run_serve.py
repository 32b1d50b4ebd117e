"""`agentkd run` serves a local collect teacher with a real `agentkd serve` subprocess (the tiny Qwen2 here),
collects through its OpenAI-compatible API, and leaves no server behind: after the run, and after Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import procs_with

from agentkd.core.jsonl import iter_jsonl
from agentkd.models.config import ModelConfig
from agentkd.pipeline import run_recipe
from agentkd.pipeline.teacher import served_name, served_teacher

pytestmark = pytest.mark.slow


def test_local_teacher_is_served_over_http_and_stopped(tiny_qwen, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"metadata": {}, "examples": [
        {"id": f"q{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(2)]}))
    rec = tmp_path / "recipe.yaml"
    rec.write_text(yaml.safe_dump({
        "collect": {"tasks": {"path": str(tasks)}, "tools": {"search": None}, "concurrency": 2,
                    "teacher": {"model": str(tiny_qwen), "device": "cpu", "sampling": {"max_tokens": 8}},
                    "agent": {"ftp": False, "max_steps": 1}}}))
    assert procs_with(str(tiny_qwen)) == []
    res = run_recipe(rec, out=tmp_path / "out", progress=False, echo=lambda s: None)
    url = res.stages[0].detail["teacher_served"]
    assert url and url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    trajs = list(iter_jsonl(tmp_path / "out" / "collect" / "trajectories.jsonl"))
    assert len(trajs) == 2
    for t in trajs:  # collected as an API teacher is: openai/NAME at the served URL
        assert t["provenance"]["model"] == f"openai/{served_name(str(tiny_qwen))}"
        assert t["provenance"]["api_base"] == url
    assert procs_with(str(tiny_qwen)) == []  # the server is gone...
    with pytest.raises(httpx.ConnectError):  # ...and so is its port
        httpx.get(url.removesuffix("/v1") + "/health", timeout=2)
    # the rerun is skipped and starts no server
    res = run_recipe(rec, out=tmp_path / "out", progress=False, echo=lambda s: None)
    assert res.stages[0].status == "skipped" and "teacher_served" in res.stages[0].detail


def test_ctrl_c_stops_the_server(tiny_qwen):
    from openai import OpenAI

    model = ModelConfig(model=f"local:{tiny_qwen}", device="cpu", batch={"max_sequences": 3})
    with pytest.raises(KeyboardInterrupt), served_teacher(model, timeout_s=300) as teacher:
        [pid] = procs_with(str(tiny_qwen))
        # the teacher's batching settings are the server's
        assert b"batch.max_sequences=3" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        client = OpenAI(base_url=teacher.api_base, api_key="unused", max_retries=0)
        assert teacher.timeout_s == 3600.0  # requests queue behind each other at a one-model server
        r = client.chat.completions.create(model=teacher.model.removeprefix("openai/"), max_tokens=4,
                                           messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content is not None
        raise KeyboardInterrupt
    assert procs_with(str(tiny_qwen)) == []


def test_server_that_dies_is_one_line(tmp_path):
    from agentkd.core.errors import PreflightError

    missing = Path(tmp_path) / "no-such-model"
    missing.mkdir()
    with pytest.raises(PreflightError, match="exited with code") as e, \
            served_teacher(ModelConfig(model=f"local:{missing}", device="cpu"), timeout_s=120):
        pass
    assert "\n" not in str(e.value)
    assert procs_with(str(missing)) == []
