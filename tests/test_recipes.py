"""The shipped whole-loop recipes plan as `agentkd run` will run them: every stage present, the paths chained,
the trained student evaluated with the run's adapter, the suites they name shipped with agentkd."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkd.core.suites import load_suite
from agentkd.pipeline.plan import resolve

REPO = Path(__file__).resolve().parents[1]
PAPER_TESTS = {"hotpotqa", "bamboogle", "musique", "2wikimultihopqa", "math500", "gsm-hard", "aime", "olymmath"}


@pytest.mark.parametrize("name", ["quickstart", "api-teacher-gpu", "paper-setup"])
def test_whole_loop_recipes_plan_every_stage(name, tmp_path):
    plan = resolve(REPO / "recipes" / f"{name}.yaml", out=tmp_path / "run")
    names = [s.name for s in plan.stages]
    assert names[0] == "collect" and names[-2:] == ["eval-base", "eval-trained"] and "curate" in names and "train" in names
    st = {s.name: s for s in plan.stages}
    assert st["curate"].config.runs == [str(tmp_path / "run" / "collect")]
    assert st["train"].config.dataset == str(tmp_path / "run" / "dataset")
    assert st["eval-trained"].config.student.adapter == str(tmp_path / "run" / "model")
    assert st["eval-base"].config.student.adapter is None
    assert st["eval-base"].config.student.model == st["train"].config.model
    for b in st["eval-base"].config.benchmarks:
        assert load_suite(b.suite).name == b.suite  # a shipped suite (its task file may be absent)
    load_suite(st["collect"].config.tasks.suite)


def test_paper_setup_is_the_papers():
    plan = resolve(REPO / "recipes" / "paper-setup.yaml")
    st = {s.name: s for s in plan.stages}
    ev, col, tr = st["eval-trained"].config, st["collect"].config, st["train"].config
    assert {b.suite for b in ev.benchmarks} == PAPER_TESTS
    assert (ev.agent.sag.n, ev.agent.sag.temperature, ev.agent.sag.top_p) == (8, 0.4, 0.8)
    assert "Qwen2.5-32B-Instruct" in col.teacher.model and col.teacher.api_base and col.agent.ftp
    assert col.tools.search.url and ev.tools.search.url == col.tools.search.url  # the shared tools section
    assert (tr.lora.r, tr.lora.alpha, tr.lr, tr.epochs, tr.batch_size * tr.grad_accum, tr.max_length) == \
        (64, 128, 2e-4, 2, 8, 10240)
