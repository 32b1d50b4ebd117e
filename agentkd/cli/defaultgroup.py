"""A typer command group with a default command: `agentkd curate RUN ...` means `agentkd curate run RUN ...`,
while sibling subcommands (`agentkd curate check-masks`, `agentkd eval compare`, `agentkd train merge`) still
win by name. Used by the `curate`, `eval` and `train` groups."""

from __future__ import annotations

from typer.core import TyperGroup

DEFAULT = "run"


class DefaultGroup(TyperGroup):
    """Routes `GROUP ARGS` to the `run` command unless ARGS start with a command name (or --help)."""

    def parse_args(self, ctx, args):  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [DEFAULT, *args]
        return super().parse_args(ctx, args)
