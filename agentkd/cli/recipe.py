"""`agentkd recipe`: check and explain recipes and stage configs."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Check recipes and explain every config field.", no_args_is_help=True)


@app.command("check")
def check(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: section.key=value (repeatable)."),
) -> None:
    """Validate a recipe (with overrides) and print the resolved configs as YAML."""
    import yaml

    from agentkd.core.config import load_recipe

    configs = load_recipe(recipe, set_)
    typer.echo(yaml.safe_dump({k: v.model_dump(mode="json") for k, v in configs.items()}, sort_keys=False))


@app.command("explain")
def explain(section: str = typer.Argument(None, help="Section to explain (default: all).")) -> None:
    """List every key of a recipe section with its type, default and meaning."""
    from rich.console import Console
    from rich.table import Table

    from agentkd.core.config import SECTIONS, ConfigError, section_class
    from agentkd.core.config import explain as explain_rows

    names = [section] if section else sorted(SECTIONS)
    for name in names:
        if name not in SECTIONS:
            raise ConfigError(f"unknown section (known: {', '.join(sorted(SECTIONS))})", path=name)
        table = Table(title=f"[bold]{name}[/bold]", title_justify="left", show_lines=False)
        for col in ("key", "type", "default", "description"):
            table.add_column(col, overflow="fold")
        for row in explain_rows(section_class(name), prefix=f"{name}."):
            table.add_row(*row)
        Console().print(table)
