"""`agentkd curate RUN... --out DATASET`: scored runs → an SFT/DPO dataset folder.

A command group whose default command curates, so `agentkd curate RUN --out DS` works and sibling
commands (`agentkd curate check-masks ...`) sit beside it: a first argument that is not a command name is
taken as a run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from agentkd.cli.defaultgroup import DEFAULT, DefaultGroup
from agentkd.cli.masks import check_masks_cmd

app = typer.Typer(cls=DefaultGroup, no_args_is_help=True,
                  help="Curate run folders into a training dataset (RUN... --out DATASET), and check it.")
app.command("check-masks")(check_masks_cmd)


@app.command(DEFAULT)
def run(
    runs: Optional[list[Path]] = typer.Argument(None, help="Run folders (default: curate.runs of the recipe)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Dataset folder to write (default: curate.out)."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", "-r", help="Recipe YAML with a `curate:` section."),
    set_: list[str] = typer.Option([], "--set", help="Override curate.KEY=VALUE (repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Score what is unscored, filter, dedupe, split by task and write DATASET/ (HF DatasetDict with train,
    validation and rejected; pairs/ for DPO; exports/ in ShareGPT, axolotl and TRL formats; card.md/json).

    Exit codes: 0 done; 2 bad input (a torn or foreign trajectory line, an unknown schema version, a missing
    run, nothing left after filtering) with nothing written; 4 push_to_hub failed (the dataset is written).
    """
    import json

    from agentkd.core.config import load_config
    from agentkd.curate.config import CurateConfig
    from agentkd.curate.pipeline import curate

    sets = list(set_)
    if runs:
        sets.append(f"curate.runs={json.dumps([str(r) for r in runs])}")
    if overwrite:
        sets.append("curate.overwrite=true")
    cfg = load_config(CurateConfig, recipe, section="curate" if recipe else None,
                      overrides=[s.removeprefix("curate.") for s in sets])
    result = curate(cfg, out, progress=not quiet)
    card = result.card
    s = card["splits"]
    removed = ", ".join(f"{f['name']} {f['removed']}" for f in card["filters"] if f["removed"]) or "none"
    typer.echo(f"{result.out}: train {s['train']['rows']} ({s['train']['tasks']} tasks), validation "
               f"{s['validation']['rows']} ({s['validation']['tasks']} tasks), rejected {s['rejected']['rows']}, "
               f"pairs {s['pairs/train']['rows']}+{s['pairs/validation']['rows']} from {result.trajectories} "
               f"trajectories; removed: {removed}; sha256 {card['sha256'][:16]}")
