"""End to end: a code action in the sandbox calls `web_search` through the tool bridge and gets passages back
from a real BM25 index on the host (acceptance item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkd import sandbox
from agentkd.tools import ToolsConfig, build_tools
from agentkd.tools.config import IndexConfig
from agentkd.tools.retrieval.build import build_index
from agentkd.tools.retrieval.corpus import load_corpus


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("sbx")
    build_index(IndexConfig(corpus="slice", kind="bm25"), root / "idx",
                passages=load_corpus("embedded:wiki-vital")[::33])
    return build_tools(ToolsConfig(search={"index": str(root / "idx"), "k": 2}, cache=str(root / "cache.sqlite")))


@pytest.fixture(scope="module")
def sb(tools):
    box = sandbox.Sandbox(sandbox.SandboxConfig(), tools={"web_search": tools["web_search"]})
    try:
        box.backend  # noqa: B018 - resolves `auto`; the error names why each backend cannot run here
    except sandbox.SandboxError as e:
        pytest.skip(f"no sandbox backend on this machine: {e}")
    yield box
    box.close()


def test_code_action_calls_web_search_through_the_bridge(sb, tools):
    code = (
        "result = web_search('What is the capital of Botswana?')\n"
        "print(result)\n"
        "first = result.split('\\n')[0]\n"
        "first"
    )
    r = sb.run(code)
    assert r.error is None, r.error
    assert r.stdout.startswith("[1] Gaborone (score ")
    assert "capital and largest city of Botswana" in r.stdout
    assert "[2] " in r.stdout and "[3] " not in r.stdout
    assert "Gaborone" in r.value
    # keyword call, state kept between actions, and the host-side cache served the repeat
    r = sb.run("again = web_search(query='What is the capital of Botswana?')\nprint(again == result)")
    assert r.error is None and r.stdout.strip() == "True"
    assert tools["web_search"].cache.stats()["hits"] >= 1


def test_tool_errors_surface_inside_the_sandbox(sb):
    r = sb.run("web_search('   ')")
    assert r.error and "query must not be empty" in r.error
    r = sb.run("web_search(42)")
    assert r.error and "TypeError" in r.error and "must be string" in r.error
    r = sb.run("try:\n    web_search()\nexcept TypeError as e:\n    print('caught', e)")
    assert r.error is None and "caught" in r.stdout and "missing required argument 'query'" in r.stdout
