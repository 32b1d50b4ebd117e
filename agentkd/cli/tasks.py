"""`agentkd tasks`: list benchmark suites and preview task sources."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Benchmark suites and task sources.", no_args_is_help=True)


@app.command("suites")
def suites() -> None:
    """List the suites (shipped, ./evals, $AGENTKD_EVALS) with their domain, split, scorer and task file."""
    from rich.console import Console
    from rich.table import Table

    from agentkd.core.suites import list_suites, load_suite

    table = Table()
    for col in ("suite", "domain", "split", "scorer", "count", "tasks from"):
        table.add_column(col)
    for name in list_suites():
        s = load_suite(name)
        where = s.where() or "[dim]missing (hub: " + (s.hub.id if s.hub else "-") + ")[/dim]"
        domain = f"per task ({s.domain} by default)" if s.fields.domain else s.domain
        table.add_row(s.name, domain, s.split, s.scorer, str(s.count or ""), where)
    Console().print(table)


@app.command("show")
def show(
    source: str = typer.Argument(..., help="Suite name, or a JSON/JSONL task file."),
    limit: int = typer.Option(5, help="How many tasks to print."),
    offset: int = typer.Option(0, help="Skip this many tasks first."),
) -> None:
    """Print the first tasks of a suite or file (id, domain, question, answer)."""
    from agentkd.core.tasks import TaskSource, load_tasks

    is_file = Path(source).suffix in (".json", ".jsonl") or "/" in source
    src = TaskSource(path=source, limit=limit, offset=offset) if is_file else TaskSource(suite=source, limit=limit,
                                                                                          offset=offset)
    for t in load_tasks(src):
        typer.echo(f"[{t.source}/{t.id}] ({t.domain}) {t.question}\n    answer: {t.answer!r}")
