"""Evaluation: the episode engine (`agentkd.engine`) configured with a student, SAG and the held-out sets.

    results = evaluate(EvalConfig(...), "runs/eval-smollm2")

OUT/ holds one run folder per method (`agent`, `cot`, `cot_rag`): `OUT/METHOD/{config.yaml,
trajectories.jsonl, failed.jsonl, cache.sqlite, summary.json, scores.jsonl}` with every benchmark's tasks
× seeds (seed s of a task is sample s, seed `seed + s`), run exactly as collection runs: concurrency,
resume, the progress bar (with the running accuracy), the same tools and sandbox. Then each run folder is
scored (`agentkd.score.run.score_run`: only what has no score yet; the judge when `judge` is set), and
OUT/{results.json, report.md, plots/*.png, manifest.json} are written from the scores.

A rerun of a finished evaluation starts no model (every episode is stored), scores nothing new and writes
the same numbers (the bootstrap is seeded).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from agentkd.core.jsonl import iter_jsonl
from agentkd.core.tasks import TaskSource, load_tasks
from agentkd.core.types import Task, Trajectory
from agentkd.engine import EpisodeRunner, EpisodeSetup, LocalEpisodes, RunFolder, RunSummary
from agentkd.evaluate.config import EvalConfig
from agentkd.tools.config import ToolsConfig

RESULTS_SCHEMA = 1


def benchmark_name(src: TaskSource) -> str:
    if src.suite:
        return Path(src.suite).stem if src.suite.endswith((".yaml", ".yml")) else src.suite
    if src.source:
        return src.source
    if src.path:
        return Path(src.path).stem
    return (src.hf or "hf").replace("/", "_")


def load_benchmarks(cfg: EvalConfig) -> dict[str, list[Task]]:
    """benchmark name → its tasks (each task's `source` is the benchmark name, so keys stay unique)."""
    out: dict[str, list[Task]] = {}
    for i, src in enumerate(cfg.benchmarks):
        name = benchmark_name(src)
        if name in out:
            from agentkd.core.config import ConfigError

            raise ConfigError(f"two benchmarks are named {name!r}", path=f"evaluate.benchmarks[{i}]")
        out[name] = [t if t.source == name else t.model_copy(update={"source": name}) for t in load_tasks(src)]
    return out


class RunningScore:
    """The running accuracy on the progress bar (scored in memory; the sidecar is written afterwards)."""

    def __init__(self) -> None:
        self.n = 0
        self.right = 0.0

    def __call__(self, traj: Trajectory) -> str | None:
        from agentkd.score.base import score_trajectory

        try:
            correct = score_trajectory(traj).correct
        except Exception:  # the bar must not stop a run; the real scoring pass reports problems
            return None
        if correct is not None:
            self.n += 1
            self.right += correct
        return f"acc {self.right / self.n:.1%} of {self.n}" if self.n else None


def _worker(cfg: EvalConfig, method: str, folder: RunFolder, progress: bool) -> LocalEpisodes:
    tools = cfg.tools if method != "cot" else ToolsConfig(search=None)  # cot needs no index (and no pre-flight)
    setup = EpisodeSetup(model=cfg.student, agent=cfg.agent, client=cfg.client, tools=tools, sandbox=cfg.sandbox,
                         concurrency=cfg.concurrency, model_key="evaluate.student", tools_key="evaluate.tools")
    if method == "agent":
        return LocalEpisodes(setup, folder, progress=progress)
    from agentkd.evaluate.baselines import BaselineEpisodes

    return BaselineEpisodes(setup, folder, progress=progress, method=method, baseline=cfg.baselines)


async def run_method(cfg: EvalConfig, method: str, tasks: list[Task], out: Path, *,
                     progress: bool = True) -> RunSummary | None:
    """Run (or resume) one method's episodes; None when every episode was stored already (no model loaded)."""
    folder = RunFolder(out / method)
    todo = folder.todo(tasks, samples=cfg.seeds, seed=cfg.seed)
    if not todo:
        return None
    folder.write_config({"evaluate": cfg.model_dump(mode="json"), "method": method})
    runner = EpisodeRunner(folder, _worker(cfg, method, folder, progress), concurrency=cfg.concurrency,
                           budget_usd=cfg.client.budget_usd, progress=progress, label=f"eval {method}",
                           on_stored=RunningScore())
    return await runner.run(todo, tasks=len(tasks), samples=cfg.seeds)


def _trajectory_views(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """key → {steps, sag_votes} of every stored trajectory (plain dicts: no validation)."""
    views = {}
    for obj in iter_jsonl(path / "trajectories.jsonl"):
        t = obj.get("task", {})
        key = (f"{t['source']}/{t['id']}" if t.get("source") else str(t.get("id")),
               obj.get("provenance", {}).get("sample_index", 0))
        steps = obj.get("steps", [])
        votes = [s["extra"]["sag"]["vote"] for s in steps if isinstance(s.get("extra", {}).get("sag"), dict)]
        views[key] = {"steps": len(steps), "sag_votes": votes}
    return views


def collect_results(cfg: EvalConfig, benchmarks: dict[str, list[Task]], out: Path) -> dict[str, Any]:
    """results.json's content, from the run folders' trajectories and scores."""
    from agentkd.evaluate.metrics import (
        CI_METHOD,
        CONFIDENCE,
        averages,
        benchmark_result,
        merge_by_steps,
        vote_shares,
    )
    from agentkd.score.store import read_scores

    methods: dict[str, Any] = {}
    for method in cfg.methods:
        path = out / method
        scores = read_scores(path)
        views = _trajectory_views(path)
        benches = {name: benchmark_result(tasks, cfg.seeds, scores, views, seed=cfg.seed,
                                          n_resamples=cfg.bootstrap_resamples) for name, tasks in benchmarks.items()}
        counts: dict[str, int] = {}
        for b in benches.values():
            for k in ("unanimous", "split", "none"):
                if b["sag"]["steps"]:
                    counts[k] = counts.get(k, 0) + round(b["sag"][k] * b["sag"]["steps"])
        methods[method] = {"benchmarks": benches, "averages": averages(benches), "sag": vote_shares(counts),
                           "by_steps": merge_by_steps(benches)}
    return {
        "schema": RESULTS_SCHEMA,
        "model": cfg.student.model, "adapter": cfg.student.adapter,
        "judge": cfg.judge.model.model if cfg.judge else None,
        "seeds": cfg.seeds, "seed": cfg.seed,
        "sag": cfg.agent.sag.model_dump() if "agent" in cfg.methods else None,
        "ci": {"method": CI_METHOD, "confidence": CONFIDENCE, "n_resamples": cfg.bootstrap_resamples,
               "seed": cfg.seed, "statistic": "mean",
               "unit": "a task: its score averaged over the seeds that scored it (per_task)"},
        "methods": methods,
    }


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


async def evaluate_async(cfg: EvalConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    from agentkd.evaluate.manifest import build_manifest
    from agentkd.evaluate.plots import write_plots
    from agentkd.evaluate.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    benchmarks = load_benchmarks(cfg)
    tasks = [t for ts in benchmarks.values() for t in ts]
    summaries: dict[str, Any] = {}
    for method in cfg.methods:
        s = await run_method(cfg, method, tasks, out, progress=progress)
        summaries[method] = s
    for method in cfg.methods:
        if (out / method / "trajectories.jsonl").exists():
            from agentkd.score.run import score_run

            await asyncio.to_thread(score_run, out / method, judge=cfg.judge, progress=progress)
    results = collect_results(cfg, benchmarks, out)
    results["runs"] = {m: s.model_dump(mode="json") if s is not None else None for m, s in summaries.items()}
    write_json(out / "manifest.json", build_manifest(cfg, benchmarks))
    stable = {k: v for k, v in results.items() if k != "runs"}  # what this run did is in each summary.json
    write_json(out / "results.json", stable)
    plots = write_plots(stable, out / "plots")
    write_report(stable, out / "report.md", plots=plots, manifest=json.loads((out / "manifest.json").read_text()))
    return results


def evaluate(cfg: EvalConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) an evaluation and write its results; returns results.json's content plus `runs`
    (each method's `RunSummary` of this call, None when nothing was left to run)."""
    return asyncio.run(evaluate_async(cfg, out_dir, progress=progress))
