"""`agentkd train RECIPE`: fine-tune a student; `agentkd train merge ADAPTER --out DIR`: merge a LoRA."""

from __future__ import annotations

from pathlib import Path

import typer

from agentkd.cli.defaultgroup import DefaultGroup

app = typer.Typer(cls=DefaultGroup, no_args_is_help=True,
                  help="Fine-tune a student from a recipe (`agentkd train RECIPE`), or merge an adapter.")


@app.command("run")
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML with a `train:` section."),
    set_: list[str] = typer.Option([], "--set", help="Override train.KEY=VALUE (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUT/checkpoints."),
    stop_after: int = typer.Option(None, "--stop-after", help="Stop (with a checkpoint) at this step; --resume continues."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train per the recipe's `train:` section (SFT, or DPO from an SFT adapter). Writes the adapter with
    agentkd_provenance.json, recipe.yaml, the dataset card and training_curve.png to train.out
    (default models/<recipe name>). Exit 2 on a recipe, dataset, model or mask problem, before training.

    More than one GPU: accelerate launch --config_file recipes/accelerate/fsdp.yaml -m agentkd train RECIPE
    """
    from agentkd.core.config import ConfigError, load_recipe
    from agentkd.train.run import train

    configs = load_recipe(recipe, list(set_))
    if "train" not in configs:
        raise ConfigError("recipe has no `train:` section", file=recipe)
    cfg = configs["train"]
    updates = {}
    if cfg.out is None:
        updates["out"] = str(Path("models") / recipe.stem)
    if quiet:
        updates["progress"] = False
    cfg = cfg.model_copy(update=updates)
    out = train(cfg, resume=resume, stop_after=stop_after, file=str(recipe))
    typer.echo(str(out))


@app.command("merge")
def merge(
    adapter: Path = typer.Argument(..., help="LoRA adapter folder (an `agentkd train` output)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the merged HF model."),
    base: str = typer.Option(None, "--base", help="Base model (default: the adapter's provenance / config)."),
) -> None:
    """Merge a LoRA adapter into its base model and save a plain HF folder (servable without PEFT)."""
    from agentkd.train.merge import merge_adapter

    typer.echo(str(merge_adapter(adapter, out, base=base)))
