"""`train(config)`: the entry of `agentkd train RECIPE`.

Order matters: every check that can fail on bad input runs first, before any model is loaded (one line,
exit 2): the device and precision, the dataset folder and its columns, the model path, the SFT adapter a
DPO run starts from, and the curation stage's mask check (a dataset that would train nothing, or would
train system/user/observation tokens, or a template without generation markers). Then the trainer runs,
and OUT gets the adapter (standard PEFT: adapter_config.json + adapter_model.safetensors), its
provenance, the resolved recipe, the dataset card and the training curve. OUT/checkpoints holds the
checkpoints `resume=True` continues from (same step count, same data order).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError
from agentkd.train.config import TrainConfig
from agentkd.train.device import Placement, resolve_placement

log = logging.getLogger(__name__)

SFT_COLUMNS = ("messages",)
PAIR_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class Plan:
    out: Path
    model_path: Path
    placement: Placement
    checkpoint: str | None


def default_out(config: TrainConfig) -> Path:
    return Path(config.out) if config.out else Path("models") / Path(config.dataset).name


def _split_columns(folder: Path, file: str | None, what: str) -> dict[str, list[str]]:
    """Column names per split of a saved DatasetDict, read from its metadata (no data loaded)."""
    dd_json = folder / "dataset_dict.json"
    if not folder.is_dir():
        raise ConfigError(f"{what} folder does not exist: {folder}", file=file, path="train.dataset")
    if not dd_json.exists():
        raise ConfigError(f"{folder} is not a saved DatasetDict (no dataset_dict.json); give an `agentkd curate` "
                          "output folder", file=file, path="train.dataset")
    out = {}
    for split in json.loads(dd_json.read_text()).get("splits", []):
        info = folder / split / "dataset_info.json"
        feats = json.loads(info.read_text()).get("features", {}) if info.exists() else {}
        out[split] = list(feats)
    return out


def check_dataset(config: TrainConfig, file: str | None = None) -> None:
    folder = Path(config.dataset)
    if config.method == "sft":
        cols = _split_columns(folder, file, "dataset")
        if "train" not in cols:
            raise ConfigError(f"dataset {folder} has no `train` split (splits: {', '.join(cols) or 'none'})",
                              file=file, path="train.dataset")
        missing = [c for c in SFT_COLUMNS if c not in cols["train"]]
        if missing:
            raise ConfigError(f"dataset {folder} train split has no `{missing[0]}` column (columns: "
                              f"{', '.join(cols['train'])})", file=file, path="train.dataset")
    else:
        cols = _split_columns(folder / "pairs", file, "preference pairs (DATASET/pairs)")
        if "train" not in cols or any(c not in cols["train"] for c in PAIR_COLUMNS):
            raise ConfigError(f"{folder / 'pairs'} needs a train split with columns {', '.join(PAIR_COLUMNS)}",
                              file=file, path="train.dataset")


def resolve_model_path(spec: str, file: str | None = None) -> Path:
    from agentkd.models.load import local_path_for

    path = local_path_for(spec, progress=False)
    if path is None and re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith("."):
        path = hub_snapshot(spec, file)
    if path is None and ("/" in spec or spec.startswith(".")):
        path = Path(spec).expanduser()  # a path that is not there: say so, not "not a local model"
    if path is None:
        raise ConfigError(f"model {spec!r} is not a local model: give embedded:NAME, local:PATH or an HF folder",
                          file=file, path="train.model")
    if not path.exists():
        raise ConfigError(f"model path does not exist: {path}", file=file, path="train.model")
    if path.is_dir() and not (path / "config.json").exists():
        raise ConfigError(f"model folder has no config.json: {path}", file=file, path="train.model")
    return path


def hub_snapshot(repo_id: str, file: str | None = None) -> Path:
    """A Hugging Face Hub model id (Qwen/Qwen2.5-1.5B-Instruct): its local snapshot, downloaded once
    (HF_HUB_OFFLINE=1 uses the cache only)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt",
                                                               "*.model", "*.tiktoken"]))
    except Exception as e:  # offline, unknown repo, no network: one line, exit 2
        raise ConfigError(f"model {repo_id!r} is neither a local folder nor loadable from the Hub "
                          f"({type(e).__name__}); download it or give its folder", file=file,
                          path="train.model") from None


def last_checkpoint(out: Path) -> str | None:
    """The newest *complete* checkpoint in OUT/checkpoints. transformers writes a checkpoint in place and its
    trainer_state.json last, and its own `get_last_checkpoint` takes the highest-numbered folder, so a run killed
    while saving would resume from a half-written one (no optimizer or state): those are skipped here."""
    ck = out / "checkpoints"
    if not ck.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in ck.iterdir()
                    if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))), reverse=True)
    for _step, path in found:
        try:
            json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            log.warning("skipping %s: incomplete (the run stopped while saving it)", path)
            continue
        return str(path)
    return None


def preflight(config: TrainConfig, *, resume: bool = False, file: str | None = None) -> Plan:
    """Every check that needs no model weights; raises ConfigError (exit 2) with one line."""
    placement = resolve_placement(config.device, config.precision, file=file)
    check_dataset(config, file)
    if config.method == "dpo":
        if not config.adapter:
            raise ConfigError("method: dpo starts from an SFT adapter; set train.adapter", file=file,
                              path="train.adapter")
        if not (Path(config.adapter) / "adapter_config.json").exists():
            raise ConfigError(f"not a PEFT adapter folder (no adapter_config.json): {config.adapter}", file=file,
                              path="train.adapter")
    model_path = resolve_model_path(config.model, file)
    out = default_out(config)
    checkpoint = last_checkpoint(out)
    if resume and checkpoint is None:
        raise ConfigError(f"--resume: no checkpoint in {out / 'checkpoints'}", file=file, path="train.out")
    if not resume and checkpoint is not None:
        raise ConfigError(f"{out} has checkpoints of an earlier run; pass --resume to continue it, or choose "
                          "another train.out", file=file, path="train.out")
    return Plan(out=out, model_path=model_path, placement=placement, checkpoint=checkpoint if resume else None)


def train(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None,
          file: str | None = None) -> Path:
    """Train per `config`; returns OUT (the adapter folder). `stop_after` stops (with a checkpoint) at that
    global step, as an interruption would; such a run writes no final adapter and `resume=True` continues it."""
    from agentkd.curate.templates import load_student_tokenizer

    plan = preflight(config, resume=resume, file=file)
    model_ref = str(plan.model_path)  # embedded/local/Hub specs all resolve to a folder here
    tokenizer = load_student_tokenizer(model_ref, config.template)
    report = None
    if config.method == "sft" and config.check_masks:
        from agentkd.curate.masks import check_masks

        report = check_masks(config.dataset, model_ref, template=config.template, max_length=config.max_length,
                             tokenizer=tokenizer)
        log.info("mask check: %s of %s tokens trained (%.1f%%) over %s examples", report.trained_tokens,
                 report.total_tokens, 100 * report.trained_share, report.examples)

    from agentkd.train.callbacks import RichProgress, StopAfter

    callbacks: list[Any] = [RichProgress(f"{config.method} {Path(config.dataset).name}")] if config.progress else []
    if stop_after is not None:
        callbacks.append(StopAfter(stop_after))
    plan.out.mkdir(parents=True, exist_ok=True)
    if config.method == "sft":
        from agentkd.train.sft import build_sft_trainer

        trainer = build_sft_trainer(config, plan.model_path, tokenizer, plan.placement, plan.out, callbacks)
    else:
        from agentkd.train.dpo import build_dpo_trainer

        trainer = build_dpo_trainer(config, plan.model_path, tokenizer, plan.placement, plan.out, callbacks)
    result = trainer.train(resume_from_checkpoint=plan.checkpoint)
    state = trainer.state
    (plan.out / "log_history.json").write_text(json.dumps(state.log_history, indent=1))
    if state.global_step < state.max_steps:
        log.info("stopped at step %s of %s; resume with --resume", state.global_step, state.max_steps)
        return plan.out
    return finish(trainer, config, plan, report, dict(result.metrics))


def finish(trainer: Any, config: TrainConfig, plan: Plan, report: Any, metrics: dict[str, Any]) -> Path:
    from agentkd.train.plots import plot_curve
    from agentkd.train.provenance import CURVE, write_provenance

    evals = [r for r in trainer.state.log_history if "eval_loss" in r]
    if evals and evals[-1].get("step") == trainer.state.global_step:
        metrics["eval_loss"] = evals[-1]["eval_loss"]
    elif trainer.eval_dataset is not None:  # every rank evaluates (distributed), rank 0 writes
        metrics.update(trainer.evaluate())
    metrics["global_step"] = trainer.state.global_step
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        if config.finetune == "lora":
            model.save_pretrained(str(plan.out), selected_adapters=["default"])
        else:
            from transformers import AutoTokenizer

            model.save_pretrained(str(plan.out))
            AutoTokenizer.from_pretrained(str(plan.model_path)).save_pretrained(str(plan.out))
        plot_curve(trainer.state.log_history, plan.out / CURVE, title=f"{config.method}: {Path(config.dataset).name}")
        write_provenance(plan.out, config=config, base_path=plan.model_path, mask_report=report, metrics=metrics,
                         extra={"padding_free": getattr(trainer, "agentkd_padding_free", False),
                                "precision": plan.placement.precision, "device": plan.placement.device})
    return plan.out
