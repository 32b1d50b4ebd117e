"""`agentkd curate check-masks`: check a curated dataset's loss masks as TRL's SFTTrainer will build them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def check_masks_cmd(
    dataset: Path = typer.Argument(..., help="DATASET folder (a datasets.DatasetDict saved with save_to_disk)."),
    model: str = typer.Option(..., "--model", "-m", help="Student model: embedded:NAME, local:PATH or an HF folder."),
    split: str = typer.Option("train", "--split", help="Split to check."),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="The training max_length (TRL truncates "
                                             "keeping the start); default: no cap."),
    template: Optional[str] = typer.Option(None, "--template", help="Training chat template: a .jinja file, a TRL "
                                           "name (qwen2_5, llama3, ...), `chatml` or `stock`; default: by family."),
    show: int = typer.Option(0, "--show", help="Index of the example printed with its trained spans."),
) -> None:
    """Render every example like SFTTrainer(assistant_only_loss=True) and fail (exit 2) if an example trains no
    token, trains system/user/observation text, or the template has no generation markers. Prints the trained
    share and one example: trained spans in ⟦…⟧ (bold green on a terminal)."""
    from agentkd.curate.masks import TRAINED_CLOSE, TRAINED_OPEN, check_masks, format_report

    report = check_masks(dataset, model, split=split, template=template, max_length=max_length, show=show,
                         progress=sys.stderr.isatty())
    if not sys.stdout.isatty():
        typer.echo(format_report(report))
        return
    from rich.console import Console
    from rich.text import Text

    head, _, _ = format_report(report).rpartition(f"(trained spans in {TRAINED_OPEN}…{TRAINED_CLOSE}):")
    console = Console()
    console.print(Text(head + "(trained spans in bold green, masked text dim):"))
    console.print(Text.assemble(*((t, "bold green" if on else "dim") for t, on in report.example_spans)))
