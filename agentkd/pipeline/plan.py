"""A recipe → the ordered stages of one run folder, with the paths that chain them wired by `agentkd run`.

The stages read each other's outputs, so their paths are set here, not in the recipe: collect writes
OUT/collect, curate reads it (when `curate.runs` is empty) and writes OUT/dataset, train reads that and
writes OUT/model, and evaluation runs twice, the base student (OUT/eval-base) and the trained one
(OUT/eval-trained: the same base model with OUT/model as its adapter). A stage section's own `out`
(and train's `dataset`) are replaced under `agentkd run`; `run.dirs` moves the folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentkd.core.config import ConfigError, apply_overrides, load_recipe, load_yaml, validate
from agentkd.pipeline.config import RunConfig

ORDER = ("collect", "score", "curate", "train", "evaluate")
# fields that change how a stage runs, not what it writes: left out of its stamp
NOT_STAMPED = {"collect": {"concurrency"}, "evaluate": {"concurrency"}, "train": {"progress"},
               "curate": {"batch_size", "overwrite"}}


@dataclass
class Stage:
    name: str  # collect, score, curate, train, eval-base, eval-trained, eval
    section: str  # the recipe section it runs
    config: BaseModel
    out: Path
    inputs: list[str] = field(default_factory=list)  # stages whose outputs it reads


@dataclass
class Plan:
    recipe: Path
    out: Path
    run: RunConfig
    stages: list[Stage]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)


def _under(out: Path, d: str) -> Path:
    return Path(d) if Path(d).is_absolute() else out / d


def resolve(recipe: str | Path, overrides: list[str] | None = None, out: str | Path | None = None) -> Plan:
    """Load the recipe with `overrides`, wire the stage paths, and list the stages it has, in order."""
    recipe = Path(recipe)
    raw = apply_overrides(load_yaml(recipe), overrides)
    run = validate(RunConfig, raw.get("run"), file=recipe, prefix="run")
    stages_in = [s for s in ORDER if s in raw]
    if not stages_in:
        raise ConfigError(f"recipe has no stage section (any of: {', '.join(ORDER)})", file=recipe)
    root = Path(out) if out else Path(run.out or Path("runs") / recipe.stem)
    d = {k: _under(root, v) for k, v in run.dirs.model_dump().items()}
    wire: dict[str, Any] = {}
    if "collect" in raw:
        wire["collect.out"] = str(d["collect"])
    if "curate" in raw:
        cur = raw.get("curate") or {}
        if "collect" in raw and not cur.get("runs"):
            wire["curate.runs"] = [str(d["collect"])]
        wire["curate.out"] = str(d["dataset"])
        wire["curate.overwrite"] = True  # the stamp decides when it reruns
        if "train" in raw and "student" not in cur:  # lengths in the tokenizer of the model trained
            wire["curate.student"] = (raw.get("train") or {}).get("model", "embedded:smollm2-135m")
    if "train" in raw:
        if "curate" in raw:
            wire["train.dataset"] = str(d["dataset"])
        wire["train.out"] = str(d["model"])
    sets = [*(overrides or []), *(f"{k}={json.dumps(v)}" for k, v in wire.items())]
    configs = load_recipe(recipe, sets)

    stages: list[Stage] = []
    if "collect" in configs:
        stages.append(Stage("collect", "collect", configs["collect"], d["collect"]))
    if "score" in configs:
        if "collect" not in configs:
            raise ConfigError("a `score:` section under `agentkd run` scores the collect stage's run; add "
                              "`collect:` or run `agentkd score RUN`", file=recipe, path="score")
        stages.append(Stage("score", "score", configs["score"], d["collect"], ["collect"]))
    if "curate" in configs:
        ins = ["score" if "score" in configs else "collect"] if "collect" in configs else []
        stages.append(Stage("curate", "curate", configs["curate"], d["dataset"], ins))
    if "train" in configs:
        stages.append(Stage("train", "train", configs["train"], d["model"], ["curate"] if "curate" in configs else []))
    if "evaluate" in configs:
        ev = configs["evaluate"]
        if "train" in configs:
            tr = configs["train"]
            base = ev.student.model_copy(update={"model": tr.model, "adapter": None, "api_base": None})
            if tr.finetune == "lora":
                trained = base.model_copy(update={"adapter": str(d["model"])})
            else:
                trained = base.model_copy(update={"model": f"local:{d['model']}"})
            if run.eval_base:
                stages.append(Stage("eval-base", "evaluate", ev.model_copy(update={"student": base}), d["eval_base"]))
            stages.append(Stage("eval-trained", "evaluate", ev.model_copy(update={"student": trained}),
                                d["eval_trained"], ["train"]))
        else:
            stages.append(Stage("eval", "evaluate", ev, d["eval"]))
    return Plan(recipe=recipe, out=root, run=run, stages=stages)


def stage_config(stage: Stage, root: Path) -> dict[str, Any]:
    """What a stage's stamp hashes: its resolved config (run-folder paths written relative to it)."""
    data = stage.config.model_dump(mode="json", exclude=NOT_STAMPED.get(stage.section, set()))
    text = json.dumps(data, sort_keys=True).replace(json.dumps(str(root))[1:-1], "$OUT")
    return json.loads(text)
