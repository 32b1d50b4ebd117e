"""Fail fast on what no retry can fix: missing or rejected credentials, an unknown model, a bad request, an
api_base that does not answer, a missing index. The run stops at once with one line and exit code 4
(pre-flight before the first episode, or the first call); failed episodes make the CLI exit 5.

Time bounds here express behaviour (no retry, no wait for a timeout), with the issue's margins: a run
that retried would take its backoff (tens of seconds here), not a few seconds."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from agentkd.core.errors import EXIT_EPISODES_FAILED, EXIT_FATAL, PreflightError
from agentkd.models.api import LiteLLMModel, to_model_error
from agentkd.models.base import FatalModelError, ModelError
from agentkd.models.config import ModelConfig
from agentkd.models.openai_compat import OpenAICompatModel
from agentkd.models.preflight import _KEY_VARS, preflight_model
from agentkd.models.retry import RetryingModel
from agentkd.testing.standin import StandinServer
from agentkd.tools.config import ToolsConfig
from agentkd.tools.preflight import preflight_tools

MSG = [{"role": "user", "content": "Task: 2+2?"}]
FATAL_FAULTS = ["400", "401", "403", "404"]


class CountingStandin(StandinServer):
    """A stand-in that also counts GETs (`requests` logs chat completions only)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.methods: list[str] = []

    async def _answer(self, method: str, raw: bytes) -> bytes:
        self.methods.append(method)
        return await super()._answer(method, raw)


def closed_port() -> int:
    """A port that refuses connections: bound, then closed."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_recipe(tmp: Path, teacher: dict, n_tasks: int = 4, **over) -> Path:
    tasks = tmp / "tasks.json"
    tasks.write_text(json.dumps({"metadata": {}, "examples": [
        {"id": f"q{i}", "question": f"Synthetic question number {i}?", "answer": "x"} for i in range(n_tasks)]}))
    collect = {"tasks": {"path": str(tasks)}, "teacher": teacher,
               "client": {"backoff_s": 1.0, "max_backoff_s": 5.0, "retries": 6},
               "agent": {"ftp": False, "prompt": "codeact_student"}, "tools": {"search": None},
               "sandbox": {"backend": "auto"}, "samples": 1, "concurrency": 1, **over}
    recipe = tmp / "r.yaml"
    recipe.write_text(yaml.safe_dump({"collect": collect}))
    return recipe


def run_cli(recipe: Path, out: Path, env: dict | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "agentkd", "collect", str(recipe), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return r, time.monotonic() - t0


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def stored_rows(run: Path) -> tuple[int, int]:
    """(trajectories, failed episodes) stored in a run folder."""
    def count(name: str) -> int:
        p = run / name
        return len(p.read_text().splitlines()) if p.exists() else 0

    return count("trajectories.jsonl"), count("failed.jsonl")


def cache_rows(run: Path) -> int:
    p = run / "cache.sqlite"
    if not p.exists():
        return 0
    with sqlite3.connect(p) as c:
        return c.execute("SELECT count(*) FROM requests").fetchone()[0]


def env_without_keys(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k not in ("OPENAI_BASE_URL",
                                                                                           "OPENAI_API_BASE")}
    return {**env, **extra}


# -- CLI runs ----------------------------------------------------------------------------------------------

def test_litellm_teacher_without_credentials_fails_at_once_and_makes_no_request(tmp_path):
    with CountingStandin() as srv:
        # litellm's openai provider sends to OPENAI_BASE_URL / OPENAI_API_BASE: any request would land here
        redirect = {"OPENAI_BASE_URL": srv.url, "OPENAI_API_BASE": srv.url}
        recipe = write_recipe(tmp_path, {"model": "openai/gpt-4o-mini"})
        r, elapsed = run_cli(recipe, tmp_path / "run", env=env_without_keys(**redirect))
        assert r.returncode == EXIT_FATAL, r.stderr
        line = one_line_error(r.stderr)
        assert "OPENAI_API_KEY" in line and "openai/gpt-4o-mini" in line
        assert elapsed < 5, f"{elapsed:.1f}s: the run must stop before any retry"
        assert srv.methods == [], "no request may be made"
        assert stored_rows(tmp_path / "run") == (0, 0) and cache_rows(tmp_path / "run") == 0
        # control: with a key the same recipe does reach the redirect (so "no request" above means something)
        r, _ = run_cli(recipe, tmp_path / "run", env=env_without_keys(OPENAI_API_KEY="sk-standin", **redirect))
        assert r.returncode == 0, r.stderr[-2000:]
        assert "POST" in srv.methods and stored_rows(tmp_path / "run") == (4, 0)


def test_api_base_that_refuses_connections_fails_at_once(tmp_path):
    api_base = f"http://127.0.0.1:{closed_port()}/v1"
    recipe = write_recipe(tmp_path, {"model": "openai/standin", "api_base": api_base})
    r, elapsed = run_cli(recipe, tmp_path / "run")
    assert r.returncode == EXIT_FATAL, r.stderr
    line = one_line_error(r.stderr)
    assert api_base in line and "collect.teacher.api_base" in line
    assert elapsed < 10, f"{elapsed:.1f}s"
    assert stored_rows(tmp_path / "run") == (0, 0) and cache_rows(tmp_path / "run") == 0


@pytest.mark.parametrize("fault", FATAL_FAULTS)
def test_client_error_is_called_once_not_retried_and_stops_the_run(tmp_path, fault):
    with CountingStandin(faults={fault: 1.0}) as srv:
        recipe = write_recipe(tmp_path, {"model": "openai/standin", "api_base": srv.url})
        r, elapsed = run_cli(recipe, tmp_path / "run")
        posts = srv.methods.count("POST")
    assert r.returncode == EXIT_FATAL, r.stderr
    line = one_line_error(r.stderr)
    assert f"({fault}:" in line and "openai/standin" in line and srv.url in line
    # one call: not retried (6 retries with 1 s backoff were allowed), and no other episode started
    assert posts == 1 and srv.methods[0] == "GET"  # the pre-flight's GET /models, then the one call
    assert elapsed < 10, f"{elapsed:.1f}s"
    assert stored_rows(tmp_path / "run") == (0, 0), "a fatal error is not an episode's failure"


def test_a_run_whose_episodes_all_failed_exits_5_with_the_count(tmp_path):
    with StandinServer(faults={"500": 1.0}) as srv:
        recipe = write_recipe(tmp_path, {"model": "openai/standin", "api_base": srv.url}, n_tasks=3,
                              client={"retries": 0}, concurrency=3)
        r, _ = run_cli(recipe, tmp_path / "run")
    assert r.returncode == EXIT_EPISODES_FAILED, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == (f"error: 3 of 3 episodes failed (infrastructure); see {tmp_path / 'run' / 'failed.jsonl'}; "
                    "rerun to retry them")
    assert stored_rows(tmp_path / "run") == (0, 3)


def test_wrong_model_name_is_found_by_preflight_with_what_the_server_serves(tmp_path):
    with CountingStandin() as srv:
        recipe = write_recipe(tmp_path, {"model": "openai/gpt-4o", "api_base": srv.url})
        r, _ = run_cli(recipe, tmp_path / "run")
        assert srv.methods == ["GET"]
    line = one_line_error(r.stderr)
    assert r.returncode == EXIT_FATAL and "'gpt-4o'" in line and "serves standin" in line
    assert "collect.teacher.model" in line


# -- classification ----------------------------------------------------------------------------------------

PROVIDERS = [pytest.param(lambda url: LiteLLMModel("openai/standin", api_base=url), id="litellm"),
             pytest.param(lambda url: OpenAICompatModel("openai/standin", api_base=url), id="openai-compatible")]


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("fault", FATAL_FAULTS)
async def test_client_errors_are_fatal_and_not_retried(make, fault):
    with StandinServer(faults={fault: 1.0}) as srv:
        m = RetryingModel(make(srv.url), retries=5, backoff_s=0.01)
        with pytest.raises(FatalModelError) as e:
            await m.generate(MSG)
        await m.aclose()
        assert len(srv.requests) == 1
    err = e.value
    assert err.status == int(fault) and not err.retryable and m.stats.retries_total == 0
    msg = str(err)
    assert "\n" not in msg and msg.startswith("openai/standin (") and srv.url in msg
    assert {"400": "bad request", "401": "authentication failed", "403": "permission denied",
            "404": "not found"}[fault] in msg


@pytest.mark.parametrize("make", PROVIDERS)
@pytest.mark.parametrize("fault", ["429", "500", "malformed"])
async def test_transient_errors_stay_retryable(make, fault):
    with StandinServer(faults={fault: 1.0}, retry_after_s=0) as srv:
        m = make(srv.url)
        with pytest.raises(ModelError) as e:
            await m.generate(MSG)
        await m.aclose()
    assert e.value.retryable and not isinstance(e.value, FatalModelError)


@pytest.mark.parametrize("make", PROVIDERS)
async def test_refused_connection_stays_retryable(make):
    m = make(f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(ModelError) as e:
        await m.generate(MSG)
    await m.aclose()
    assert e.value.retryable and not isinstance(e.value, FatalModelError)  # pre-flight catches a server never up


async def test_litellm_missing_key_is_fatal_and_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with StandinServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        m = RetryingModel(LiteLLMModel("openai/gpt-4o-mini"), retries=3, backoff_s=0.01)
        with pytest.raises(FatalModelError) as e:
            await m.generate(MSG)
        assert srv.requests == []
    assert str(e.value) == "openai/gpt-4o-mini (litellm): no API key: set OPENAI_API_KEY"
    assert m.stats.retries_total == 0
    # a variable named in api_key_env is the one to set
    monkeypatch.delenv("MY_TEACHER_KEY", raising=False)
    with pytest.raises(FatalModelError, match=r"set MY_TEACHER_KEY$"):
        await LiteLLMModel("openai/gpt-4o-mini", api_key_env="MY_TEACHER_KEY").generate(MSG)


def test_litellm_exception_kinds():
    import litellm

    def kind(exc: Exception) -> str:
        err = to_model_error(exc, "openai/gpt-4o-mini")
        return "fatal" if isinstance(err, FatalModelError) else "retryable" if err.retryable else "episode"

    args = ("boom", "openai", "gpt-4o-mini")
    req = __import__("httpx").Request("POST", "http://x")
    resp = __import__("httpx").Response(403, request=req)
    assert kind(litellm.AuthenticationError(*args)) == "fatal"
    assert kind(litellm.PermissionDeniedError("boom", "openai", "gpt-4o-mini", response=resp)) == "fatal"
    assert kind(litellm.NotFoundError("boom", "gpt-4o-mini", "openai")) == "fatal"
    assert kind(litellm.BadRequestError("boom", "gpt-4o-mini", "openai")) == "fatal"
    assert kind(litellm.ContextWindowExceededError("too long", "gpt-4o-mini", "openai")) == "fatal"
    assert kind(litellm.UnsupportedParamsError("seed is not supported", "openai", "gpt-4o-mini")) == "fatal"
    missing = "OpenAIException - Missing credentials. Please pass an `api_key` or set the `OPENAI_API_KEY` ..."
    assert kind(litellm.InternalServerError(missing, "openai", "gpt-4o-mini")) == "fatal"
    assert kind(litellm.APIConnectionError("Missing Gemini API key. Set GEMINI_API_KEY", "gemini", "g")) == "fatal"
    # content refused for one task's text: that episode ends, the run goes on
    assert kind(litellm.ContentPolicyViolationError("flagged", "gpt-4o-mini", "openai")) == "episode"
    for exc in (litellm.RateLimitError(*args), litellm.InternalServerError(*args),
                litellm.InternalServerError("Connection error.", "openai", "gpt-4o-mini"),
                litellm.APIConnectionError(*args), litellm.Timeout("slow", "gpt-4o-mini", "openai"),
                litellm.ServiceUnavailableError(*args)):
        assert kind(exc) == "retryable", exc
    auth = to_model_error(litellm.AuthenticationError("Incorrect API key", "openai", "gpt-4o-mini"),
                          "openai/gpt-4o-mini")
    assert str(auth) == "openai/gpt-4o-mini (litellm): authentication failed (401: Incorrect API key): check OPENAI_API_KEY"


def test_key_table_agrees_with_litellm(monkeypatch):
    import litellm

    for names in _KEY_VARS.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    for provider, names in _KEY_VARS.items():
        assert set(litellm.validate_environment(f"{provider}/some-model")["missing_keys"]) >= set(names), provider


# -- pre-flight --------------------------------------------------------------------------------------------

def test_preflight_credentials(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(PreflightError, match=r"^anthropic/claude-3-5-haiku \(litellm\): no API key: set ANTHROPIC_API_KEY"):
        preflight_model(ModelConfig(model="anthropic/claude-3-5-haiku"), key="collect.teacher")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-x")
    preflight_model(ModelConfig(model="anthropic/claude-3-5-haiku"))
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(PreflightError, match="set MY_KEY"):
        preflight_model(ModelConfig(model="anthropic/claude-3-5-haiku", api_key_env="MY_KEY"))
    monkeypatch.setenv("MY_KEY", "sk-y")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    preflight_model(ModelConfig(model="anthropic/claude-3-5-haiku", api_key_env="MY_KEY"))
    # a provider outside the table: litellm tells which variable it needs
    monkeypatch.delenv("CEREBRAS_API_KEY", raising=False)
    with pytest.raises(PreflightError, match="set CEREBRAS_API_KEY"):
        preflight_model(ModelConfig(model="cerebras/llama3.1-8b"))


def test_preflight_api_base_that_never_answers_times_out():
    listener = socket.socket()  # accepts connections (the kernel's backlog) but never answers
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    api_base = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    t0 = time.monotonic()
    try:
        with pytest.raises(PreflightError, match=r"does not answer .*timed out.*: start the server"):
            preflight_model(ModelConfig(model="openai/standin", api_base=api_base), key="collect.teacher")
    finally:
        listener.close()
    assert time.monotonic() - t0 < 15


@contextmanager
def answering(status: int):
    """An HTTP server on 127.0.0.1 that answers every GET with `status`; yields its /v1 URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"error": {"message": "nope"}}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_preflight_api_base_answers():
    with StandinServer() as srv:
        preflight_model(ModelConfig(model="openai/standin", api_base=srv.url))
        preflight_model(ModelConfig(model="hosted_vllm/standin", api_base=srv.url))
    with answering(404) as url, pytest.raises(PreflightError, match=r"GET .*/models is not found \(404\).*ends in /v1"):
        preflight_model(ModelConfig(model="openai/standin", api_base=url))
    with answering(401) as url, pytest.raises(PreflightError, match=r"refused \(401\).*collect\.teacher\.api_key_env"):
        preflight_model(ModelConfig(model="openai/standin", api_base=url), key="collect.teacher")
    with answering(503) as url:  # up but not ready: retries handle that, pre-flight lets it pass
        preflight_model(ModelConfig(model="openai/standin", api_base=url))


def test_preflight_local_and_embedded(tmp_path):
    with pytest.raises(PreflightError, match="not found"):
        preflight_model(ModelConfig(model=f"local:{tmp_path / 'nope'}"))
    preflight_model(ModelConfig(model=f"local:{tmp_path}"))
    from agentkd.models.embedded import EMBEDDED, package_file

    em = EMBEDDED["smollm2-135m"]
    if package_file(em.package, em.filename) is None:
        with pytest.raises(PreflightError, match="needs its package"):
            preflight_model(ModelConfig(model="embedded:smollm2-135m"))
    else:
        preflight_model(ModelConfig(model="embedded:smollm2-135m"))
    with pytest.raises(PreflightError, match="unknown embedded model"):
        preflight_model(ModelConfig(model="embedded:nope"))


def test_preflight_tools(tmp_path):
    preflight_tools(ToolsConfig(search=None))
    with pytest.raises(PreflightError, match=r"^collect\.tools\.search\.index: .*nope not found"):
        preflight_tools(ToolsConfig(search={"index": str(tmp_path / "nope")}), key="collect.tools")
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(PreflightError, match=r"collect\.tools\.search\.url: .* does not answer"):
        preflight_tools(ToolsConfig(search={"url": url}), key="collect.tools")
    import importlib.util

    from agentkd.tools.retrieval.corpus import EMBEDDED

    if importlib.util.find_spec(EMBEDDED["embedded:wiki-vital"][0]) is None:
        with pytest.raises(PreflightError, match="not installed"):
            preflight_tools(ToolsConfig())
    else:
        preflight_tools(ToolsConfig())  # the embedded corpus: its index is built on first use, not here


def test_fatal_error_mid_run_cancels_episodes_in_flight(tmp_path):
    """One episode's fatal error stops the others at once (they are mid-call, waiting on a slow teacher)."""
    from agentkd.collect import CollectConfig
    from agentkd.collect.runner import collect_async

    recipe = yaml.safe_load(write_recipe(tmp_path, {}, n_tasks=8).read_text())["collect"]

    class Slow401(StandinServer):  # the 3rd request gets a 401 at once; the others would take 30 s
        async def _answer(self, method, raw):
            if method == "POST":
                self.faults = {"401": 1.0} if len(self.requests) == 2 else {}
                self.latency_s = 0.0 if len(self.requests) == 2 else 30.0
            return await super()._answer(method, raw)

    with Slow401() as srv:
        cfg = CollectConfig.model_validate({**recipe, "concurrency": 4,
                                            "teacher": {"model": "openai/standin", "api_base": srv.url}})
        t0 = time.monotonic()
        with pytest.raises(FatalModelError, match=r"authentication failed \(401"):
            asyncio.run(collect_async(cfg, tmp_path / "run", progress=False))
        elapsed = time.monotonic() - t0
        assert len(srv.requests) == 4  # the 4 in flight; no new episode started after the 401
    assert elapsed < 20, f"{elapsed:.1f}s: in-flight episodes must be cancelled, not awaited"
    assert stored_rows(tmp_path / "run") == (0, 0)
