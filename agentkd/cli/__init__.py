"""The `agentkd` command line: parse arguments, call one library function, print.

Each command group lives in its own module here and imports heavy libraries only inside its commands,
so `agentkd --help` stays fast and never imports torch.
"""

from __future__ import annotations

import sys

import typer

from agentkd.cli import collect as _collect
from agentkd.cli import curate as _curate
from agentkd.cli import evaluate as _evaluate
from agentkd.cli import index as _index
from agentkd.cli import models as _models
from agentkd.cli import recipe as _recipe
from agentkd.cli import run as _run
from agentkd.cli import sandbox as _sandbox
from agentkd.cli import score as _score
from agentkd.cli import serve as _serve
from agentkd.cli import tasks as _tasks
from agentkd.cli import train as _train
from agentkd.cli import view as _view

app = typer.Typer(
    name="agentkd",
    help="Distil tool-using LLM agents into small models: collect → curate → train → evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(_curate.app, name="curate")
app.add_typer(_evaluate.app, name="eval")
app.add_typer(_index.app, name="index")
app.add_typer(_models.app, name="models")
app.add_typer(_recipe.app, name="recipe")
app.add_typer(_sandbox.app, name="sandbox")
app.add_typer(_tasks.app, name="tasks")
app.add_typer(_train.app, name="train")
app.command("serve")(_serve.serve)
app.command("collect")(_collect.collect)
app.command("view")(_view.view)
app.command("score")(_score.score)
app.command("run")(_run.run)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the agentkd version and exit.", is_eager=True),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    import logging

    if version:
        from agentkd import __version__

        typer.echo(__version__)
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, show_time=False)])


def main() -> None:
    """Entry point: errors the user can act on print one line and exit with their documented code
    (`agentkd.core.errors`: 2 config, 3 budget, 4 fatal model/pre-flight, 5 failed episodes), no traceback."""
    from agentkd.core.errors import EXIT_INTERRUPTED, AgentkdError

    try:
        app()
    except AgentkdError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
