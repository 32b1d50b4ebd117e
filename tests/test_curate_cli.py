"""`agentkd curate RUN... --out DS` end to end in a real subprocess: the dataset it writes, a recipe section,
bad inputs (one line, exit code 2, nothing written) and raw run files left byte-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_curate import make_traj, write_run

RUN_FILES = ("trajectories.jsonl", "config.yaml", "summary.json")


def cli(*args, timeout=180):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "agentkd", "curate", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in RUN_FILES if (run / name).exists()}


def test_curate_end_to_end_and_runs_untouched(tmp_path, tiny_qwen):
    from datasets import load_from_disk

    runs = [write_run(tmp_path / f"run{k}", [make_traj(f"t{i}", s, final="Paris" if (i + s) % 3 else "Rome",
                                                       codes=[f"print({i}, {s}, {k})"])
                                             for i in range(k * 10, k * 10 + 10) for s in range(2)])
            for k in range(2)]
    before = [snapshot(r) for r in runs]
    r = cli(*runs, "--out", tmp_path / "ds", "--set", f"curate.student={tiny_qwen}", "--set",
            "curate.validation_fraction=0.2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{tmp_path / 'ds'}: train ") and "from 40 trajectories" in r.stdout
    assert [snapshot(x) for x in runs] == before
    ds = load_from_disk(str(tmp_path / "ds"))
    card = json.loads((tmp_path / "ds" / "card.json").read_text())
    assert len(ds["train"]) == card["splits"]["train"]["rows"] and len(ds["validation"]) > 0
    assert {row["source_run"] for row in ds["train"]} == {str(x) for x in runs}
    assert card["tokens"]["tokenizer"] == str(tiny_qwen) and card["tokens"]["max"] > 0
    assert [x["path"] for x in card["runs"]] == [str(x) for x in runs]
    assert (tmp_path / "ds" / "exports" / "axolotl.jsonl").exists()
    assert load_from_disk(str(tmp_path / "ds" / "pairs"))["train"].num_rows > 0

    again = cli(*runs, "--out", tmp_path / "ds", "--set", "curate.student=null")
    assert again.returncode == 2 and again.stderr.strip().count("\n") == 0 and "already exists" in again.stderr

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"curate:\n  runs: [{runs[0]}]\n  student: null\n  exports: [trl]\n  out: {tmp_path / 'ds2'}\n")
    r2 = cli("--recipe", recipe)
    assert r2.returncode == 0, r2.stderr
    assert sorted(p.name for p in (tmp_path / "ds2" / "exports").iterdir()) == ["trl.jsonl", "trl_validation.jsonl"]


def test_bad_inputs_exit_2_with_one_line_and_nothing_written(tmp_path):
    good = make_traj("a").model_dump_json() + "\n"
    cases = {
        "torn": good + good[:50],
        "foreign": good + '{"hello": "world"}\n',
        "schema": good + json.dumps({**make_traj("b").model_dump(mode="json"), "schema_version": 7}) + "\n",
        "nogold": make_traj("c", answer=None).model_dump_json() + "\n",
    }
    expect = {"torn": "trajectories.jsonl:2: torn line", "foreign": "trajectories.jsonl:2: not a trajectory",
              "schema": "trajectory schema_version 7",
              "nogold": "no trajectory passed the filters (1 read: unscorable 1)"}
    for name, text in cases.items():
        run = write_run(tmp_path / f"run-{name}", [])
        (run / "trajectories.jsonl").write_text(text)
        before = snapshot(run)
        r = cli(run, "--out", tmp_path / f"ds-{name}", "--set", "curate.student=null")
        assert r.returncode == 2, (name, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len([x for x in lines if x.startswith("error:")]) == 1 and expect[name] in lines[-1], (name, lines)
        assert str(run / "trajectories.jsonl") in lines[-1] or name == "nogold"
        assert snapshot(run) == before
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f"ds-{name}")]

    r = cli(tmp_path / "nowhere", "--out", tmp_path / "ds-x", "--set", "curate.student=null")
    assert r.returncode == 2 and "nowhere: not found" in r.stderr
    r = cli(tmp_path / "run-torn", "--out", tmp_path / "ds-x", "--set", "curate.bogus=1")
    assert r.returncode == 2 and "bogus" in r.stderr


def test_curate_group_routes_runs_to_the_default_command_and_names_to_siblings():
    import typer
    from typer.testing import CliRunner

    from agentkd.cli.defaultgroup import DefaultGroup

    app = typer.Typer(cls=DefaultGroup)
    seen = []

    @app.command("run")
    def run_(runs: list[str], out: str = typer.Option(..., "--out")) -> None:
        seen.append(("run", runs, out))

    @app.command("check-masks")
    def check(dataset: str) -> None:
        seen.append(("check-masks", dataset))

    runner = CliRunner()
    assert runner.invoke(app, ["runs/a", "runs/b", "--out", "ds"]).exit_code == 0
    assert runner.invoke(app, ["check-masks", "ds"]).exit_code == 0
    assert seen == [("run", ["runs/a", "runs/b"], "ds"), ("check-masks", "ds")]
