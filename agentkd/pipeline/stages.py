"""`run_recipe`: run a recipe's stages in order, each skipped, resumed or rerun as its stamp says.

    result = run_recipe("recipes/quickstart.yaml", out="runs/quickstart")

Every stage calls its own stage's public entry (collect, score_run, curate, train, evaluate) on the paths
`agentkd.pipeline.plan` wired; OUT/summary.{json,md} are written at the end (`agentkd.pipeline.summary`)
and the viewer pages next to each run.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkd.core.errors import EXIT_BUDGET, EXIT_EPISODES_FAILED, EXIT_INTERRUPTED, AgentkdError
from agentkd.pipeline.plan import Plan, Stage, resolve, stage_config
from agentkd.pipeline.stamps import Stamps, stage_hash

log = logging.getLogger(__name__)


class StageStopped(AgentkdError):
    """A stage ended before its outputs were complete (budget, failed episodes, a training stop): the
    stamp says so and the next `agentkd run` resumes it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class StageOutcome:
    name: str
    status: str  # skipped | ran | resumed | rerun (config or inputs changed)
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineResult:
    out: Path
    stages: list[StageOutcome]
    summary: dict[str, Any]
    summary_json: Path
    summary_md: Path
    reports: list[Path] = field(default_factory=list)
    views: list[Path] = field(default_factory=list)


# -- completeness and reset ------------------------------------------------------------------------------
def complete(stage: Stage) -> bool:
    """Are the stage's outputs all there (checked before a skip, so a deleted output is made again)?"""
    out = stage.out
    if stage.section == "collect":
        from agentkd.engine import RunFolder

        s = RunFolder(out).read_summary()
        return s is not None and s.complete and not s.failed_infra
    if stage.section == "score":
        return (out / "scores.jsonl").exists()
    if stage.section == "curate":
        return (out / "card.json").exists()
    if stage.section == "train":
        return (out / "agentkd_provenance.json").exists()
    return (out / "results.json").exists()


def _clear_run(folder: Path) -> None:
    """Remove a run folder's outputs but keep its request caches (a changed config asks again what is new)."""
    if not folder.exists():
        return
    for p in sorted(folder.rglob("*"), reverse=True):
        if p.is_file() or p.is_symlink():
            if "cache.sqlite" not in p.name:
                p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def reset(stage: Stage) -> None:
    if stage.section in ("collect", "evaluate"):
        _clear_run(stage.out)
    elif stage.section == "score":
        (stage.out / "scores.jsonl").unlink(missing_ok=True)
    elif stage.section == "train":
        shutil.rmtree(stage.out, ignore_errors=True)
    # curate replaces its dataset whole (curate.overwrite is wired on)


def _checkpoints(out: Path) -> list[Path]:
    ck = out / "checkpoints"
    found = [p for p in ck.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


# -- the stages ------------------------------------------------------------------------------------------
def _collect(plan: Plan, stage: Stage, progress: bool, **_: Any) -> dict[str, Any]:
    import contextlib

    from agentkd.collect.runner import collect
    from agentkd.pipeline.teacher import is_local, served_teacher

    cfg = stage.config
    serve = plan.run.serve_teacher if plan.run.serve_teacher is not None else is_local(cfg.teacher)
    ctx = served_teacher(cfg.teacher, timeout_s=plan.run.serve_timeout_s) if serve and is_local(cfg.teacher) \
        else contextlib.nullcontext(cfg.teacher)
    with ctx as teacher:
        if teacher is not cfg.teacher:
            log.info("teacher %s served at %s as %s", cfg.teacher.model, teacher.api_base, teacher.model)
        summary = collect(cfg.model_copy(update={"teacher": teacher}), stage.out, progress=progress)
    detail = {"stored": summary.stored, "total_stored": summary.total_stored, "teacher_served": teacher.api_base
              if teacher is not cfg.teacher else None}
    if summary.stopped == "budget":
        raise StageStopped(f"collect: budget of ${summary.budget_usd} reached; raise collect.client.budget_usd and "
                           "rerun to continue", EXIT_BUDGET)
    if summary.failed_infra or not summary.complete:
        raise StageStopped(f"collect: {summary.failed_infra} episodes failed (infrastructure), see "
                           f"{stage.out / 'failed.jsonl'}; rerun to retry them", EXIT_EPISODES_FAILED)
    return detail


def _score(plan: Plan, stage: Stage, progress: bool, **_: Any) -> dict[str, Any]:
    from agentkd.score.run import score_run

    s = score_run(stage.out, scorer=stage.config.scorer, judge=stage.config.judge, progress=progress)
    if s.stopped == "budget":
        raise StageStopped("score: the judge's budget ran out; raise score.judge.client.budget_usd and rerun",
                           EXIT_BUDGET)
    return {"scored_new": s.scored_new, "judged_new": s.judged_new}


def _curate(plan: Plan, stage: Stage, progress: bool, **_: Any) -> dict[str, Any]:
    from agentkd.curate.pipeline import curate

    res = curate(stage.config, stage.out, progress=progress)
    return {"sha256": res.card["sha256"]}


def _train(plan: Plan, stage: Stage, progress: bool, stop_after: int | None = None, **_: Any) -> dict[str, Any]:
    from agentkd.train.run import last_checkpoint, train

    cfg = stage.config.model_copy(update={"progress": progress and stage.config.progress})
    last = last_checkpoint(stage.out)  # the newest complete one (a kill while saving leaves a torn one)
    if last is None and stage.out.exists():
        shutil.rmtree(stage.out)  # a start that saved nothing: begin again
    out = train(cfg, resume=last is not None, stop_after=stop_after, file=str(plan.recipe))
    if not complete(stage):
        done = _checkpoints(out)
        at = done[-1].name if done else "no checkpoint"
        raise StageStopped(f"train: stopped before the last step ({at} in {out / 'checkpoints'}); rerun "
                           "`agentkd run` to resume from it", EXIT_INTERRUPTED)
    return {"resumed_from": Path(last).name if last else None}


def _evaluate(plan: Plan, stage: Stage, progress: bool, **_: Any) -> dict[str, Any]:
    from agentkd.evaluate.runner import evaluate

    results = evaluate(stage.config, stage.out, progress=progress)
    runs = [r for r in results["runs"].values() if r]
    if any(r["stopped"] == "budget" for r in runs):
        raise StageStopped(f"{stage.name}: budget reached; raise evaluate.client.budget_usd and rerun", EXIT_BUDGET)
    if any(r["failed_infra"] for r in runs):
        raise StageStopped(f"{stage.name}: some episodes failed (infrastructure), see {stage.out}/METHOD/failed.jsonl;"
                           " rerun to retry them", EXIT_EPISODES_FAILED)
    return {"episodes_run": sum(r["stored"] for r in runs)}


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "collect": _collect, "score": _score, "curate": _curate, "train": _train, "evaluate": _evaluate}


# -- the loop --------------------------------------------------------------------------------------------
def run_stages(plan: Plan, outcomes: list[StageOutcome], *, progress: bool = True,
               train_stop_after: int | None = None, echo: Callable[[str], None] = print) -> list[StageOutcome]:
    """Run the plan's stages in order, appending each one's outcome to `outcomes` as it ends."""
    stamps = Stamps(plan.out / "stamps.json")
    hashes: dict[str, str] = {}
    for stage in plan.stages:
        h = hashes[stage.name] = stage_hash(stage_config(stage, plan.out), {i: hashes[i] for i in stage.inputs})
        rec = stamps.get(stage.name)
        if rec and rec["hash"] == h and rec.get("complete") and complete(stage):
            outcomes.append(StageOutcome(stage.name, "skipped", detail=rec.get("detail", {})))
            echo(f"== {stage.name}: up to date, skipped ({stage.out})")
            continue
        status = "resumed" if rec and rec["hash"] == h else "rerun" if rec else "ran"
        if status != "resumed":
            reset(stage)
        stamps.set(stage.name, {"hash": h, "complete": False})
        echo(f"== {stage.name}{' (resuming)' if status == 'resumed' else ''} → {stage.out}")
        t0 = time.perf_counter()
        detail = RUNNERS[stage.section](plan, stage, progress, stop_after=train_stop_after)
        stamps.set(stage.name, {"hash": h, "complete": True, "detail": detail})
        outcomes.append(StageOutcome(stage.name, status, round(time.perf_counter() - t0, 2), detail))
    return outcomes


def write_views(plan: Plan) -> list[Path]:
    """The viewer pages: the collect run with the dataset's verdicts, and each evaluation's run folders."""
    from agentkd.view.render import render_run

    views = []
    col, cur = plan.stage("collect"), plan.stage("curate")
    if col and (col.out / "trajectories.jsonl").exists():
        ds = cur.out if cur and (cur.out / "decisions.jsonl").exists() else None
        views.append(render_run(col.out, dataset=ds))
    for st in plan.stages:
        if st.section == "evaluate":
            for method in st.config.methods:
                if (st.out / method / "trajectories.jsonl").exists():
                    views.append(render_run(st.out / method))
    return views


def run_recipe(recipe: str | Path, overrides: list[str] | None = None, out: str | Path | None = None, *,
               progress: bool = True, until: str | None = None, train_stop_after: int | None = None,
               echo: Callable[[str], None] = print) -> PipelineResult:
    """Run (or resume) every stage of `recipe` in one run folder; writes OUT/summary.{json,md}.
    `until`: the last stage to run (collect, score, curate, train, eval; later ones are left as they are).
    `train_stop_after`: stop training at that step with a checkpoint (as an interruption would); the stage
    raises `StageStopped` and the next call resumes it."""
    from agentkd.pipeline.summary import write_summary

    plan = resolve(recipe, overrides, out)
    if until is not None:
        section = "evaluate" if until == "eval" else until
        idx = [i for i, st in enumerate(plan.stages) if st.section == section]
        if not idx:
            from agentkd.core.config import ConfigError

            raise ConfigError(f"--until {until}: the recipe has no such stage (stages: "
                              f"{', '.join(st.name for st in plan.stages)})", file=recipe)
        plan.stages = plan.stages[: idx[-1] + 1]
    plan.out.mkdir(parents=True, exist_ok=True)
    outcomes: list[StageOutcome] = []
    try:
        run_stages(plan, outcomes, progress=progress, train_stop_after=train_stop_after, echo=echo)
    except AgentkdError as e:  # what finished is summed up; the stamps let the next run go on from here
        write_summary(plan, outcomes, [], stopped=str(e))
        echo(f"summary so far: {plan.out / 'summary.md'}")
        raise
    views = write_views(plan) if plan.run.view else []
    summary, js, md = write_summary(plan, outcomes, views)
    reports = [st.out / "report.md" for st in plan.stages if st.section == "evaluate"]
    return PipelineResult(plan.out, outcomes, summary, js, md, reports, views)
