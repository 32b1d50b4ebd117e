"""`agentkd view`: write a static HTML page to browse a run's trajectories."""

from __future__ import annotations

from pathlib import Path

import typer


def view(
    run_dir: Path = typer.Argument(..., help="Run folder (with trajectories.jsonl)."),
    dataset: Path = typer.Option(None, "--dataset", "-d",
                                 help="Curated dataset folder: show which filter kept or dropped each trajectory."),
    out: Path = typer.Option(None, "--out", "-o", help="HTML file to write (default: RUN_DIR/view.html)."),
) -> None:
    """Write one self-contained HTML file (no network assets) to browse a run: task, gold and final answer,
    score (RUN/scores.jsonl), every step's thought, code, observation and error, SAG candidates and votes,
    curation verdicts, provenance and cost; with search and filters. Exit 2: not a run folder."""
    from agentkd.view import render_run

    path = render_run(run_dir, dataset=dataset, out=out)
    typer.echo(f"wrote {path}")
