"""The CLI: light start-up (no torch), every listed command answers --help, and the cheap commands work."""

from __future__ import annotations

import os
import re
import subprocess
import sys

HEAVY = ("torch", "transformers", "litellm", "faiss", "docker", "sentence_transformers", "datasets", "trl")


def run(*args, timeout=120):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "agentkd", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_import_and_help_stay_light():
    code = ("import sys, agentkd.cli\n"
            "from typer.main import get_command\n"
            "get_command(agentkd.cli.app)\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"heavy modules imported at CLI start-up: {r.stdout}"


def _commands(help_text: str) -> list[str]:
    block = help_text.split("Commands")[1]
    return re.findall(r"^│ (\S+)\s", block, flags=re.M)


def test_every_listed_command_and_subcommand_answers_help():
    r = run("--help")
    assert r.returncode == 0
    cmds = _commands(r.stdout)
    assert {"serve", "models", "recipe", "tasks"} <= set(cmds)
    groups = set()
    for cmd in cmds:
        sub = run(cmd, "--help")
        assert sub.returncode == 0, (cmd, sub.stderr)
        assert "placeholder" not in sub.stdout.lower() and "not implemented" not in sub.stdout.lower()
        if "Commands" in sub.stdout:
            leaves = _commands(sub.stdout)
            assert leaves, (cmd, sub.stdout)  # a group lists its subcommands, and each is checked
            for leaf in leaves:
                assert run(cmd, leaf, "--help").returncode == 0, (cmd, leaf)
            groups.add(cmd)
    assert {"index", "recipe", "tasks", "models"} <= groups, groups


def test_tasks_and_models_commands(shared_bench):
    r = run("tasks", "suites")
    assert r.returncode == 0 and "aime" in r.stdout and "math_equiv" in r.stdout
    r = run("tasks", "show", "bamboogle", "--limit", "2")
    assert r.returncode == 0 and r.stdout.count("[bamboogle/") == 2
    r = run("models", "list")
    assert r.returncode == 0 and "embedded:smollm2-135m" in r.stdout


def test_version():
    r = run("--version")
    assert r.returncode == 0 and re.fullmatch(r"\d+\.\d+\.\d+\s*", r.stdout)
