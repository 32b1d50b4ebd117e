"""`agentkd run RECIPE`: the whole loop (collect → score → curate → train → evaluate) in one run folder."""

from __future__ import annotations

from pathlib import Path

import typer


def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML; each stage runs if its section is there."),
    set_: list[str] = typer.Option([], "--set", help="Override SECTION.KEY=VALUE (repeatable)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default: run.out or runs/<recipe name>)."),
    until: str = typer.Option(None, "--until", help="Last stage to run: collect, score, curate, train or eval."),
    stop_after_train_step: int = typer.Option(None, "--stop-after-train-step",
                                              help="Stop training at this step with a checkpoint; rerun resumes."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run (or resume) every stage of RECIPE: OUT/collect, OUT/dataset, OUT/model, OUT/eval-base,
    OUT/eval-trained, and OUT/summary.md / summary.json. A stage whose config and inputs are unchanged
    and whose outputs are complete is skipped; one that stopped half-way resumes; a changed config reruns
    that stage and the ones after it. Prints the summary and where it, the reports and the viewer pages are.
    A local teacher is served with `agentkd serve` (run.serve_teacher).

    Exit codes as for `agentkd collect` (2 config, 3 budget, 4 fatal, 5 failed episodes, 130 stopped)."""
    from agentkd.pipeline.stages import run_recipe

    res = run_recipe(recipe, list(set_), out, progress=not quiet, until=until, train_stop_after=stop_after_train_step,
                     echo=lambda s: typer.echo(s, err=True))
    typer.echo(res.summary_md.read_text())
    typer.echo(f"summary: {res.summary_md}  ({res.summary_json})")
    for r in res.reports:
        typer.echo(f"report:  {r}")
    for v in res.views:
        typer.echo(f"viewer:  {v}")
