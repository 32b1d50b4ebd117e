"""Tool protocol, registry, final_answer and the tool-result cache (no retrieval models here)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from agentkd.core.config import ConfigError
from agentkd.tools import (
    CachedTool,
    FinalAnswerTool,
    Tool,
    ToolCache,
    ToolsConfig,
    build_tools,
    cache_stats,
    render_tools,
)


class Adder(Tool):
    name = "add"
    description = "Adds two numbers."
    inputs = {
        "a": {"type": "integer", "description": "First number."},
        "b": {"type": "number", "description": "Second number.", "default": 1.5},
    }
    output_type = "number"

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.offset = offset
        self.calls = 0

    def config_hash(self) -> str:
        return str(self.offset)

    def forward(self, a: int, b: float) -> float:  # type: ignore[override]
        self.calls += 1
        return a + b + self.offset


class Failing(Tool):
    name = "fail"
    description = "Always fails."
    inputs = {"x": {"type": "string", "description": "Anything."}}

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: str) -> str:  # type: ignore[override]
        self.calls += 1
        raise RuntimeError("boom")


def test_call_binds_positional_and_keyword_args_and_defaults():
    t = Adder()
    assert t(2, 3) == 5
    assert t(2, b=0.25) == 2.25
    assert t(a=4) == 5.5
    assert t(b=1, a=1) == 2


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing required argument 'a'"),
        (("2",), {}, "argument 'a' must be integer, got str"),
        ((True,), {}, "argument 'a' must be integer, got bool"),
        ((1, "x"), {}, "argument 'b' must be number, got str"),
        ((1, 2, 3), {}, "takes 2 argument(s) but 3 were given"),
        ((1,), {"c": 2}, "unexpected argument 'c'"),
        ((1,), {"a": 2}, "multiple values for argument 'a'"),
    ],
)
def test_bad_calls_raise_clear_type_errors(args, kwargs, message):
    t = Adder()
    with pytest.raises(TypeError) as err:
        t(*args, **kwargs)
    assert message in str(err.value)
    assert str(err.value).startswith("add()")
    assert type(err.value) is TypeError  # the builtin: crosses the sandbox bridge under its own name
    assert t.calls == 0


def test_spec_is_validated():
    class BadType(Tool):
        name = "bad"
        description = "x"
        inputs = {"q": {"type": "str", "description": "q"}}

    class BadName(Tool):
        name = "not valid"
        description = "x"

    with pytest.raises(ValueError, match="unknown type 'str'"):
        BadType()
    with pytest.raises(ValueError, match="not a Python identifier"):
        BadName()


def test_to_prompt_renders_signature_and_docstring():
    text = Adder().to_prompt()
    assert text.splitlines()[0] == "def add(a: int, b: float = 1.5) -> float:"
    assert '    """Adds two numbers.' in text
    assert "        a: First number." in text
    assert text.rstrip().endswith('"""')
    compile(text + "\n    pass\n", "<prompt>", "exec")  # it is valid Python


def test_json_schema():
    schema = Adder().to_json_schema()
    assert schema == {"type": "function", "function": {
        "name": "add", "description": "Adds two numbers.",
        "parameters": {"type": "object", "required": ["a"], "properties": {
            "a": {"type": "integer", "description": "First number."},
            "b": {"type": "number", "description": "Second number.", "default": 1.5}}}}}
    fa = FinalAnswerTool().to_json_schema()["function"]["parameters"]
    assert fa["properties"]["answer"] == {"description": "The final answer to the problem."}
    assert fa["required"] == ["answer"]


def test_final_answer_and_registry_defaults():
    fa = FinalAnswerTool()
    assert fa("Paris") == "Paris" and fa(answer=42) == 42
    tools = build_tools(ToolsConfig(search=None))
    assert list(tools) == ["final_answer"]
    assert render_tools(tools.values()).startswith("def final_answer(answer: Any) -> Any:")
    tools = build_tools(ToolsConfig(search={"name": "wiki", "index": "embedded:wiki-vital"}))  # opened lazily
    assert set(tools) == {"wiki", "final_answer"}
    assert tools["wiki"]._retriever is None  # no index was built or loaded for that
    assert tools["wiki"].inputs["query"]["type"] == "string"
    assert tools["wiki"].output_type == "string"
    assert tools["wiki"].to_prompt().startswith("def wiki(query: str) -> str:")


def test_registry_extra_tools_and_errors():
    tools = build_tools(ToolsConfig(search=None, extra=["tests.test_tools:Adder"]))
    assert tools["add"](1, 2) == 3
    with pytest.raises(ConfigError, match="cannot import tool"):
        build_tools(ToolsConfig(search=None, extra=["tests.test_tools:Nope"]))
    with pytest.raises(ConfigError, match="two tools are named 'add'"):
        build_tools(ToolsConfig(search=None, extra=["tests.test_tools:Adder", "tests.test_tools:Adder"]))
    with pytest.raises(ValueError, match="not a Python identifier"):
        ToolsConfig(search={"name": "web search"})
    with pytest.raises(ConfigError, match=r"tools\.search\.index: /nonexistent not found"):
        build_tools(ToolsConfig(search={"index": "/nonexistent"}))
    with pytest.raises(ConfigError, match=r"set search\.index"):
        build_tools(ToolsConfig(search={"index": None}))


def test_cache_hits_misses_and_config_hash(tmp_path):
    cache = ToolCache(tmp_path / "cache.sqlite")
    inner = Adder()
    t = CachedTool(inner, cache)
    assert t.name == "add" and t.to_prompt() == inner.to_prompt()
    assert t(1, 2) == 3 and t(1, b=2) == 3 and t(a=1, b=2) == 3  # same bound arguments: one call
    assert inner.calls == 1
    assert t(1) == 2.5 and inner.calls == 2
    other = Adder(offset=10)  # different config hash: a different entry
    assert CachedTool(other, cache)(1, 2) == 13 and other.calls == 1
    s = cache.stats()
    assert (s["hits"], s["misses"]) == (2, 3)
    assert s["per_tool"]["add"] == {"hits": 2, "misses": 3}
    assert len(cache) == 3
    with pytest.raises(TypeError):  # validation happens before the cache
        t("x")
    assert cache.stats()["misses"] == 3


def test_registry_shares_one_cache_per_file_and_reports_stats(tmp_path):
    cfg = ToolsConfig(search=None, extra=["tests.test_tools:Adder"], cache=str(tmp_path / "c.sqlite"))
    a, b = build_tools(cfg), build_tools(cfg)
    assert isinstance(a["add"], CachedTool) and not isinstance(a["final_answer"], CachedTool)
    assert a["add"].cache is b["add"].cache is ToolCache.shared(tmp_path / "c.sqlite")
    assert a["add"](1, 1) == b["add"](1, 1) == 2
    assert cache_stats(a) == cache_stats(b.values()) == {
        "hits": 1, "misses": 1, "hit_rate": 0.5, "per_tool": {"add": {"hits": 1, "misses": 1}}}
    assert cache_stats(build_tools(ToolsConfig(search=None))) is None


def test_cache_persists_and_never_caches_errors(tmp_path):
    path = tmp_path / "c.sqlite"
    t = CachedTool(Adder(), ToolCache(path))
    t(5, 5)
    fresh = Adder()
    cache2 = ToolCache(path)
    assert CachedTool(fresh, cache2)(5, 5) == 10 and fresh.calls == 0
    assert cache2.stats()["hits"] == 1
    f = Failing()
    cf = CachedTool(f, cache2)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="boom"):
            cf("a")
    assert f.calls == 2 and len(cache2) == 1


def test_cache_is_safe_across_threads(tmp_path):
    cache = ToolCache(tmp_path / "c.sqlite")
    inner = Adder()
    t = CachedTool(inner, cache)
    errors: list[Any] = []

    def work(i: int) -> None:
        try:
            for j in range(30):
                assert t(j % 10, i % 3) == j % 10 + i % 3
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    s = cache.stats()
    assert s["hits"] + s["misses"] == 240
    assert len(cache) == 30  # 10 values of a x 3 values of b
    assert s["misses"] >= 30


def test_cache_is_shared_across_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parents[1])!r})
        from agentkd.tools import CachedTool, ToolCache
        from tests.test_tools import Adder
        cache = ToolCache({str(path)!r})
        t = CachedTool(Adder(), cache)
        for i in range(40):
            t(i % 20, 1)
        print(cache.stats()["hits"], cache.stats()["misses"], t.tool.calls)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    hits = sum(int(o.split()[0]) for o in outs)
    misses = sum(int(o.split()[1]) for o in outs)
    assert hits + misses == 120 and hits >= 60  # each process re-reads at least its own 20 entries
    assert len(ToolCache(path)) == 20
    # what those processes stored is served to a process started afterwards: it calls the tool not once
    later = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert later.returncode == 0, later.stderr
    assert later.stdout.split() == ["40", "0", "0"]


def test_final_answer_in_the_sandbox_calls_the_host_only_when_it_does_more_than_return():
    from conftest import local_backend

    from agentkd.sandbox import Sandbox, SandboxConfig

    backend = local_backend()
    if backend is None:
        pytest.skip("needs an isolating local sandbox backend (forkserver, bwrap or unshare); none works here")
    calls = []

    class Normalized(FinalAnswerTool):
        def forward(self, answer: Any) -> Any:
            calls.append(answer)
            return str(answer).strip().lower()

    plain = FinalAnswerTool()
    plain.forward = lambda answer: calls.append(answer)  # type: ignore[method-assign]  # must not be reached
    assert plain.passthrough and not Normalized.passthrough
    with Sandbox(SandboxConfig(backend=backend), tools={"final_answer": plain}) as sb:
        r = sb.run("final_answer({'city': 'Paris'})")
        assert r.is_final and r.final_answer == {"city": "Paris"} and calls == []  # the kernel's builtin ended it
        r = sb.run("final_answer(1, 2)")
        assert not r.is_final and "TypeError" in r.error and "final_answer()" in r.error
    with Sandbox(SandboxConfig(backend=backend), tools={"final_answer": Normalized()}) as sb:
        r = sb.run("try:\n    final_answer('  PARIS ')\nexcept Exception:\n    print('swallowed')")
        assert r.is_final and r.final_answer == "paris" and calls == ["  PARIS "] and r.stdout == ""
        r = sb.run("final_answer()")
        assert not r.is_final and "missing required argument 'answer'" in r.error
