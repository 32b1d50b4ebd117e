"""`agentkd collect`: run or resume a teacher trajectory collection."""

from __future__ import annotations

from pathlib import Path

import typer


def collect(
    recipe: Path = typer.Argument(..., help="Recipe YAML with a `collect:` section."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default: collect.out or runs/<recipe name>)."),
    set_: list[str] = typer.Option([], "--set", help="Override collect.KEY=VALUE (repeatable)."),
    ftp: bool = typer.Option(None, "--ftp/--no-ftp", help="First-thought prefix (overrides collect.agent.ftp)."),
    limit: int = typer.Option(None, "--limit", help="Only the first N tasks (overrides collect.tasks.limit)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Collect teacher trajectories; rerun the same command to resume (finished episodes are skipped).

    Writes OUT/{config.yaml, trajectories.jsonl, failed.jsonl, cache.sqlite, summary.json}.

    Exit codes:

    0 done; 2 a recipe or config mistake;

    3 the budget (collect.client.budget_usd) was reached: raise it and rerun;

    4 no retry can fix it (credentials, unknown model, bad request, an
    api_base that does not answer, a missing index): the run stopped at once;

    5 some episodes ended in infrastructure failures (OUT/failed.jsonl):
    rerun to retry them.
    """
    from agentkd.collect.runner import collect as run_collect
    from agentkd.core.config import ConfigError, load_recipe
    from agentkd.core.errors import EXIT_BUDGET, EXIT_EPISODES_FAILED

    overrides = list(set_)
    if ftp is not None:
        overrides.append(f"collect.agent.ftp={str(ftp).lower()}")
    if limit is not None:
        overrides.append(f"collect.tasks.limit={limit}")
    configs = load_recipe(recipe, overrides)
    if "collect" not in configs:
        raise ConfigError("recipe has no `collect:` section", file=recipe)
    cfg = configs["collect"]
    out_dir = out or Path(cfg.out or Path("runs") / recipe.stem)
    summary = run_collect(cfg, out_dir, progress=not quiet)
    _print_summary(summary)
    if summary.stopped == "budget":
        typer.echo(f"stopped: budget of ${summary.budget_usd} reached; raise collect.client.budget_usd and rerun "
                   "to continue", err=True)
        raise typer.Exit(EXIT_BUDGET)
    if summary.failed_infra:
        ran = summary.stored + summary.failed_infra
        typer.echo(f"error: {summary.failed_infra} of {ran} episodes failed (infrastructure); see "
                   f"{Path(summary.out) / 'failed.jsonl'}; rerun to retry them", err=True)
        raise typer.Exit(EXIT_EPISODES_FAILED)


def _print_summary(s) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"collect → {s.out}", show_header=False, title_justify="left")
    rows = [
        ("tasks × samples", f"{s.tasks} × {s.samples_per_task}"),
        ("stored this run", str(s.stored)),
        ("already done (skipped)", str(s.skipped_already_done)),
        ("failed (infra, will retry)", str(s.failed_infra)),
        ("remaining", str(s.remaining)),
        ("statuses", ", ".join(f"{k}={v}" for k, v in s.statuses.items()) or "-"),
        ("retries", ", ".join(f"{k}={v}" for k, v in sorted(s.retries.items())) or "0"),
        ("request cache hits/misses", f"{s.request_cache.get('hits', 0)}/{s.request_cache.get('misses', 0)}"),
        ("tool cache hits/misses", f"{s.tool_cache.get('hits', 0)}/{s.tool_cache.get('misses', 0)}"),
        ("cost (new / total)", f"${s.cost_usd_new:.4f} / ${s.cost_usd_total:.4f}"),
        ("wall time", f"{s.wall_s:.1f} s"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    Console(stderr=True).print(t)
