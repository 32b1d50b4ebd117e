"""End to end: `agentkd eval` with the embedded SmolLM2 on CPU and SAG on a tiny slice of real benchmarks,
then the CIs recomputed from results.json, a rerun that calls no model, and `agentkd eval compare`."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from agentkd.cli import app
from tests.conftest import SHARED_BENCH

if SHARED_BENCH.is_dir():  # the paper's sets: one factual and one math task
    SUITES = ["bamboogle", "gsm-hard"]
    LIMIT = 1
else:  # a user's clone: the shipped held-out quickstart tasks
    SUITES = ["quickstart-test"]
    LIMIT = 2

RECIPE = """
evaluate:
  student: {model: "embedded:smollm2-135m", device: cpu, sampling: {temperature: 0.0, max_tokens: 24}}
  agent: {prompt: codeact_student, max_steps: 2}
  tools: {search: null}
  bootstrap_resamples: 2000
  concurrency: 2
  seed: 3
"""


def cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    recipe = root / "eval.yaml"
    recipe.write_text(RECIPE)
    suites = [a for s in SUITES for a in ("--suite", s)]
    cli("eval", str(recipe), *suites, "--limit", str(LIMIT), "--sag", "4", "--seeds", "2", "--out", str(root / "a"), "-q")
    cli("eval", str(recipe), *suites, "--limit", str(LIMIT), "--sag", "1", "--out", str(root / "b"), "-q")
    return root, recipe, suites


def test_outputs_report_results_plots_manifest(runs):
    root, _, _ = runs
    a = root / "a"
    results = json.loads((a / "results.json").read_text())
    manifest = json.loads((a / "manifest.json").read_text())
    assert (a / "plots" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (a / "plots" / "by_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (a / "report.md").read_text()
    benches = results["methods"]["agent"]["benchmarks"]
    assert set(benches) == set(SUITES) and all(b["tasks"] == LIMIT for b in benches.values())
    assert all(len(row) == 2 for b in benches.values() for row in b["per_task"].values())  # two seeds
    for name in SUITES:
        assert f"| {name} |" in report
    assert "![accuracy](plots/accuracy.png)" in report and "N=4" in report
    assert manifest["seeds"]["per_seed"] == [3, 4] and manifest["bootstrap"]["seed"] == 3
    assert manifest["agent"]["sag"]["n"] == 4 and manifest["sandbox"]["backend"]
    assert manifest["adapter"] is None and manifest["model"]["model"] == "embedded:smollm2-135m"
    for b in manifest["benchmarks"].values():
        assert b["files"] and all(len(h) == 64 for h in b["files"].values())
    # every step of the agent run was a SAG vote over 4 candidates, recorded in the step
    trajs = [json.loads(line) for line in (a / "agent" / "trajectories.jsonl").read_text().splitlines()]
    assert len(trajs) == len(SUITES) * LIMIT * 2
    sag_steps = [s["extra"]["sag"] for t in trajs for s in t["steps"] if "sag" in s["extra"]]
    assert sag_steps and all(len(s["candidates"]) == 4 and s["vote"] in ("unanimous", "split", "none")
                             for s in sag_steps)
    shares = results["methods"]["agent"]["sag"]
    assert shares["steps"] == len(sag_steps)
    assert sum(shares[k] for k in ("unanimous", "split", "none")) == pytest.approx(1.0, abs=1e-3)


def test_cis_recompute_from_results_and_rerun_calls_no_model(runs, monkeypatch):
    import numpy as np
    from scipy.stats import bootstrap

    root, recipe, suites = runs
    a = root / "a"
    results = json.loads((a / "results.json").read_text())
    seed = json.loads((a / "manifest.json").read_text())["bootstrap"]["seed"]
    checked = 0
    for method in results["methods"].values():
        for b in method["benchmarks"].values():
            per_task = [[v for v in row if v is not None] for _, row in sorted(b["per_task"].items())]
            values = np.array([sum(r) / len(r) for r in per_task if r])
            assert b["accuracy"] == pytest.approx(values.mean())
            if len(values) < 2:
                assert b["ci95"] is None
            elif len(set(values)) == 1:
                assert b["ci95"] == [values[0]] * 2
            else:
                ci = bootstrap((values,), np.mean, n_resamples=results["ci"]["n_resamples"], confidence_level=0.95,
                               method="percentile", rng=np.random.default_rng(seed)).confidence_interval
                assert b["ci95"] == pytest.approx([ci.low, ci.high], abs=1e-6)
                checked += 1
    before = (a / "results.json").read_bytes()
    requests = sqlite3.connect(a / "agent" / "cache.sqlite").execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def no_model(*a, **k):
        raise AssertionError("a finished evaluation loaded a model")

    monkeypatch.setattr("agentkd.models.load.load_model", no_model)
    cli("eval", str(recipe), *suites, "--limit", str(LIMIT), "--sag", "4", "--seeds", "2", "--out", str(a), "-q")
    assert (a / "results.json").read_bytes() == before
    assert sqlite3.connect(a / "agent" / "cache.sqlite").execute("SELECT COUNT(*) FROM requests").fetchone()[0] == requests
    assert checked or all(b["ci95"] is None or b["ci95"][0] == b["ci95"][1]
                          for m in results["methods"].values() for b in m["benchmarks"].values())


def test_compare_prints_the_table(runs):
    root, _, _ = runs
    out = cli("eval", "compare", str(root / "a"), str(root / "b"), "--md")
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert "Δ b − a" in lines[0] and "CIs overlap (b)" in lines[0]
    body = lines[2:]
    assert {ln.split("|")[2].strip() for ln in body} >= {*SUITES, "avg all"}
    assert all(ln.split("|")[1].strip() == "agent" for ln in body)
