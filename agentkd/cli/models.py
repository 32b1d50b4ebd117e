"""`agentkd models`: prepare embedded models and try any model spec."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare the embedded offline model and try model specs.", no_args_is_help=True)
