"""Evaluation pieces without a model: baselines with a scripted model, metrics, compare's overlap, config."""

from __future__ import annotations

import pytest

from agentkd.core.types import Task
from agentkd.evaluate.baselines import cot_episode
from agentkd.evaluate.compare import overlap
from agentkd.evaluate.config import BaselineConfig, EvalConfig, from_recipe
from agentkd.evaluate.metrics import averages, benchmark_result, bootstrap_ci
from agentkd.score.base import ScoreResult
from agentkd.testing import ScriptedModel

TASKS = [Task(id=str(i), question=f"q{i}", answer="a", domain="math", source="s") for i in range(4)]


@pytest.mark.asyncio
async def test_cot_and_rag_baseline_episodes():
    model = ScriptedModel(["Let me think.\nAnswer: 42", "Given the passages.\nAnswer: Paris"])
    t = await cot_episode(TASKS[0], model, BaselineConfig(), seed=5, sample_index=1)
    assert t.final_answer == "42" and t.status == "ok" and t.provenance.extra["method"] == "cot"
    assert model.calls[0]["temperature"] == 0.0 and model.calls[0]["max_tokens"] == 4096
    r = await cot_episode(TASKS[1], model, BaselineConfig(), seed=5, sample_index=0, passages="1. Paris is ...")
    assert r.final_answer == "Paris" and "Passages:\n1. Paris is ..." in model.calls[1]["messages"][1]["content"]
    assert r.provenance.extra["retrieved"] == "1. Paris is ..."


def test_benchmark_result_seeds_unscorable_missing_and_sag():
    right, wrong = ScoreResult(correct=1.0, metrics={"equiv": 1.0}, scorer="m"), \
        ScoreResult(correct=0.0, metrics={"equiv": 0.0}, scorer="m")
    none = ScoreResult(correct=None, scorer="m", reason="no gold")
    scores = {("s/0", 0): right, ("s/0", 1): right, ("s/1", 0): wrong, ("s/1", 1): right,
              ("s/2", 0): none, ("s/2", 1): wrong}  # s/3 seed 0 is missing, seed 1 too
    views = {k: {"steps": 2, "sag_votes": ["unanimous", "split"]} for k in scores}
    views[("s/3", 0)] = {"steps": 1, "sag_votes": []}  # stored but not scored yet: missing, not wrong
    b = benchmark_result(TASKS, 2, scores, views, seed=0, n_resamples=1000)
    assert b["per_task"] == {"s/0": [1.0, 1.0], "s/1": [0.0, 1.0], "s/2": [None, 0.0], "s/3": [None, None]}
    assert b["accuracy"] == pytest.approx((1 + 0.5 + 0) / 3) and b["scored_tasks"] == 3
    assert b["unscorable"] == 1 and b["missing"] == 2
    assert b["seeds"]["per_seed"] == [0.5, pytest.approx(2 / 3)] and b["seeds"]["sd"] > 0
    assert b["sag"] == {"steps": 12, "unanimous": 0.5, "split": 0.5, "none": 0.0}
    lo, hi = b["ci95"]
    assert 0 <= lo < b["accuracy"] < hi <= 1
    assert bootstrap_ci([1.0, 0.5, 0.0], seed=0, n_resamples=1000) == b["ci95"]  # seeded: the same again
    import numpy as np
    from scipy.stats import bootstrap

    many = [0.13, 0.57, 0.91, 0.22, 0.48, 0.76, 0.05, 0.64, 0.39, 0.83, 0.97, 0.92]  # skewed: methods differ
    ci = bootstrap((np.array(many),), np.mean, n_resamples=1000, confidence_level=0.95,
                   method="percentile", rng=np.random.default_rng(0)).confidence_interval  # as documented
    assert bootstrap_ci(many, seed=0, n_resamples=1000) == pytest.approx([ci.low, ci.high], abs=1e-6)
    assert bootstrap_ci(many, seed=0, n_resamples=500) != bootstrap_ci(many, seed=1, n_resamples=500)
    assert bootstrap_ci([1.0], seed=0, n_resamples=1000) is None
    assert averages({"x": {**b, "domain": "math"}, "y": {**b, "domain": "factual", "accuracy": 0.1}})["all"] == \
        pytest.approx((b["accuracy"] + 0.1) / 2)


def test_overlap_and_config_flags(tmp_path):
    assert overlap([0.1, 0.3], [0.25, 0.5]) is True and overlap([0.1, 0.2], [0.3, 0.4]) is False
    assert overlap(None, [0.1, 0.2]) is None
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sandbox: {memory_mb: 512}\nevaluate: {seeds: 2}\n")
    cfg, out = from_recipe(recipe, ["evaluate.concurrency=3"], model="local:/m", adapter="/ad", suites=["a", "b"],
                           limit=5, sag=4, judge="openai/gpt-4o-mini", methods=["agent", "cot"])
    assert isinstance(cfg, EvalConfig) and out.name == "r"
    assert [(b.suite, b.limit) for b in cfg.benchmarks] == [("a", 5), ("b", 5)]
    assert cfg.student.model == "local:/m" and cfg.student.adapter == "/ad" and cfg.agent.sag.n == 4
    assert cfg.judge.model.model == "openai/gpt-4o-mini" and cfg.sandbox.memory_mb == 512 and cfg.concurrency == 3
    assert EvalConfig().agent.prompt == "codeact_student" and EvalConfig().agent.sag.n == 8
    from agentkd.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"methods: cot_rag needs tools\.search"):
        from_recipe(recipe, ["evaluate.tools.search=null"], methods=["cot_rag"])
