"""`agentkd eval`: evaluate a student (or the teacher) on held-out benchmarks; `agentkd eval compare RUN...`."""

from __future__ import annotations

from pathlib import Path

import typer

from agentkd.cli.defaultgroup import DefaultGroup

app = typer.Typer(cls=DefaultGroup, no_args_is_help=True,
                  help="Evaluate on held-out benchmarks (`agentkd eval RECIPE`), compare runs (`agentkd eval compare`).")


@app.command("run")
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML with an `evaluate:` section."),
    set_: list[str] = typer.Option([], "--set", help="Override evaluate.KEY=VALUE (repeatable)."),
    model: str = typer.Option(None, "--model", help="Model spec (embedded:..., a local folder, a litellm string, "
                              "openai/NAME with --api-base URL)."),
    api_base: str = typer.Option(None, "--api-base", help="OpenAI-compatible server (vLLM, agentkd serve) for --model."),
    adapter: str = typer.Option(None, "--adapter", help="LoRA adapter folder (agentkd train's output)."),
    suite: list[str] = typer.Option([], "--suite", help="Benchmark suite (repeatable; replaces evaluate.benchmarks)."),
    limit: int = typer.Option(None, "--limit", help="Only the first N tasks of each benchmark."),
    seeds: int = typer.Option(None, "--seeds", help="Runs per task (mean ± sd across them)."),
    sag: int = typer.Option(None, "--sag", help="SAG candidates per step (1: off)."),
    method: list[str] = typer.Option([], "--method", help="agent, cot or cot_rag (repeatable)."),
    judge: str = typer.Option(None, "--judge", help="LLM judge model for factual suites."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default: evaluate.out or runs/<recipe name>)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Run (or resume) an evaluation: OUT/{results.json, report.md, plots/, manifest.json} and one run folder per
    method. Exit codes as for `agentkd collect` (2 config, 3 budget, 4 fatal, 5 failed episodes)."""
    from agentkd.core.errors import EXIT_BUDGET, EXIT_EPISODES_FAILED
    from agentkd.evaluate.config import from_recipe
    from agentkd.evaluate.runner import evaluate

    if api_base is not None:
        set_ = [*set_, f"evaluate.student.api_base={api_base}"]
    cfg, out_dir = from_recipe(recipe, set_, model=model, adapter=adapter, suites=suite, limit=limit, seeds=seeds,
                               sag=sag, judge=judge, methods=method, out=out)
    results = evaluate(cfg, out_dir, progress=not quiet)
    typer.echo(f"wrote {out_dir}/results.json, report.md, plots/, manifest.json", err=True)
    runs = [r for r in results["runs"].values() if r]
    if any(r["stopped"] == "budget" for r in runs):
        raise typer.Exit(EXIT_BUDGET)
    if any(r["failed_infra"] for r in runs):
        typer.echo("error: some episodes failed (infrastructure); see OUT/METHOD/failed.jsonl; rerun to retry", err=True)
        raise typer.Exit(EXIT_EPISODES_FAILED)


@app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="Evaluation folders (each with results.json); the first is the base."),
    md: bool = typer.Option(False, "--md", help="Markdown instead of a rich table."),
) -> None:
    """Side by side: accuracy [95% CI] per method and benchmark, differences from the first run, CI overlap."""
    from agentkd.evaluate.compare import print_comparison

    print_comparison(runs, md=md)
