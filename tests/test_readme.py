"""The README's commands are real: every `agentkd` command line in its code blocks names an existing command
and only flags that command has (checked against the click tree typer builds, no subprocess), every `make`
target exists in the Makefile, and every `python tools/...` script exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def code_lines(text: str) -> list[str]:
    """Lines of the fenced code blocks, continuation lines (`\\`) joined."""
    lines: list[str] = []
    for block in FENCE.findall(text):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1].rstrip() + " "
                continue
            pending = ""
            if line:
                lines.append(line)
    return lines


def agentkd_argv(line: str) -> list[str] | None:
    """The arguments after `agentkd` (`agentkd …`, `python -m agentkd …`, `accelerate launch … -m agentkd …`)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w == "agentkd" and (i == 0 or words[i - 1] == "-m"):
            return words[i + 1:]
        if w.endswith("/agentkd") and i == 0:
            return words[1:]
    return None


def _options(cmd: Any) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}


def _is_group(cmd: Any) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def check_command(root: Any, argv: list[str]) -> str | None:
    """None if `agentkd ARGV` parses as a real command with real flags; else what is wrong. Placeholders
    (RUN, RECIPE, models/NAME) stand for positional values; `[--flag X]` marks an optional flag."""
    args = [a.strip("[]").removesuffix("...").removesuffix("…") for a in argv]
    args = [a for a in args if a]
    ctx = root.context_class(root, info_name="agentkd", resilient_parsing=True)
    cmd = root  # typer's click (typer 0.29 vendors its own): duck-typed, not isinstance
    path = ["agentkd"]
    while _is_group(cmd):
        while args and args[0].startswith("-") and args[0] in _options(cmd):  # a group option (--verbose)
            args = args[1:]
        if not args:
            return f"{' '.join(path)}: no command"
        name, sub = args[0], cmd.get_command(ctx, args[0])
        if sub is None and "run" in cmd.commands and type(cmd).__name__ == "DefaultGroup":
            sub, name = cmd.commands["run"], None  # `agentkd curate RUN…` is `agentkd curate run RUN…`
        if sub is None:
            return f"{' '.join(path)}: no command {args[0]!r}"
        if name is not None:
            args = args[1:]
            path.append(name)
        cmd = sub
    if "--help" in args or "-h" in args:
        return None
    unknown = [a.split("=", 1)[0] for a in args if a.startswith("-") and not _is_number(a)
               and a.split("=", 1)[0] not in _options(cmd)]
    if unknown:
        return f"{' '.join(path)}: no option {', '.join(unknown)}"
    try:
        sub_ctx = cmd.make_context(path[-1], list(args), parent=ctx, resilient_parsing=True)
    except Exception as e:  # click's UsageError (NoSuchOption, BadArgumentUsage, ...)
        if not hasattr(e, "format_message"):
            raise
        return f"{' '.join(path)}: {e.format_message()}"
    if sub_ctx.args:
        return f"{' '.join(path)}: unexpected arguments {sub_ctx.args}"
    return None


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def root() -> Any:
    import typer.main

    from agentkd.cli import app

    return typer.main.get_command(app)


def readme_lines() -> list[str]:
    return code_lines((REPO / "README.md").read_text())


def test_every_agentkd_command_in_the_readme_exists(root):
    commands = [(line, argv) for line in readme_lines() if (argv := agentkd_argv(line)) is not None]
    assert len(commands) >= 15, commands  # the README shows every stage's commands
    wrong = [f"{line}\n    -> {err}" for line, argv in commands if (err := check_command(root, argv))]
    assert not wrong, "README commands that the CLI does not have:\n" + "\n".join(wrong)
    seen = {tuple(a for a in argv[:2] if not a.startswith("-")) for _, argv in commands}
    for expected in (("run",), ("collect",), ("score",), ("curate",), ("train",), ("eval",), ("view",)):
        assert any(s[:1] == expected for s in seen), expected


def test_the_checker_catches_wrong_commands(root):
    assert check_command(root, ["collect", "recipes/quickstart.yaml", "--out", "runs/x"]) is None
    assert check_command(root, ["curate", "runs/a", "runs/b", "--out", "ds"]) is None  # the default command
    assert check_command(root, ["eval", "compare", "runs/a", "runs/b", "[--md]"]) is None
    assert "no option --ot" in check_command(root, ["collect", "recipes/quickstart.yaml", "--ot", "x"])
    assert "no command 'colect'" in check_command(root, ["colect", "recipes/quickstart.yaml"])
    assert "unexpected arguments" in check_command(root, ["view", "runs/a", "runs/b"])
    assert "no option --sag" in check_command(root, ["collect", "r.yaml", "--sag", "4"])


def test_make_targets_and_scripts_in_the_readme_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    lines = readme_lines()
    makes = [w for line in lines if (ws := line.split())[:1] == ["make"] for w in ws[1:2]]
    assert makes and set(makes) <= targets, (makes, targets)
    scripts = {w for line in lines for w in line.split() if w.startswith("tools/") and w.endswith((".py", ".sh"))}
    prose = (REPO / "README.md").read_text()
    scripts |= set(re.findall(r"`(?:python )?(tools/[\w/]+\.(?:py|sh))", prose))
    assert scripts, "the README names its scripts"
    missing = sorted(s for s in scripts if not (REPO / s).is_file())
    assert not missing, missing


def test_code_lines_join_continuations():
    text = "x\n```bash\nagentkd collect a \\\n    --out b   # c\n```\n"
    assert code_lines(text) == ["agentkd collect a --out b   # c"]
    assert agentkd_argv("accelerate launch --config_file f.yaml -m agentkd train r.yaml") == ["train", "r.yaml"]
    assert agentkd_argv("error: agentkd failed") is None
