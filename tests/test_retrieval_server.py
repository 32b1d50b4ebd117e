"""The retrieval server and its client over real HTTP on 127.0.0.1: search, batch search, health, errors,
timeouts, retries, the web_search tool pointed at a server, and `agentkd index serve` as a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentkd.tools import ToolsConfig, build_tools
from agentkd.tools.config import IndexConfig
from agentkd.tools.retrieval.build import build_index, load_index
from agentkd.tools.retrieval.client import RetrievalClient, RetrievalServerError
from agentkd.tools.retrieval.corpus import load_corpus
from agentkd.tools.retrieval.server import RetrievalServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bm25_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("srv") / "bm25"
    passages = load_corpus("embedded:wiki-vital")[::33]
    build_index(IndexConfig(corpus="embedded:wiki-vital[::33]", kind="bm25"), out, passages=passages)
    return out


@pytest.fixture(scope="module")
def server(bm25_dir):
    srv = RetrievalServer(load_index(bm25_dir), port=0).start()
    yield srv
    srv.stop()


def test_client_matches_local_search(server, bm25_dir):
    local = load_index(bm25_dir)
    client = RetrievalClient(server.url, timeout_s=5, retries=0)
    assert server.url.startswith("http://127.0.0.1:")
    for q in ("What is the capital of Botswana?", "SI unit of power", "Roman city buried by Vesuvius"):
        assert client.search(q, 4) == local.search(q, 4)
    batch = client.search_batch(["capital of Botswana", "snooker table"], k=2)
    assert [[h.id for h in hits] for hits in batch] == [
        [h.id for h in local.search("capital of Botswana", 2)], [h.id for h in local.search("snooker table", 2)]]
    health = client.health()
    assert health["status"] == "ok" and health["count"] == 305 and health["kind"] == "bm25"
    assert client.fingerprint() == local.fingerprint()


def test_bad_requests_fail_at_once_without_retries(server, caplog):
    import logging

    client = RetrievalClient(server.url, timeout_s=5, retries=3, backoff_s=0.01)
    with caplog.at_level(logging.DEBUG, logger="agentkd.tools.retrieval.server"):  # one record per request served
        with pytest.raises(RetrievalServerError, match=r"rejected the request \(400\): query must be a non-empty string"):
            client.search("  ", 3)
        with pytest.raises(RetrievalServerError, match="k must be an integer"):
            client.search("x", 0)
        with pytest.raises(RetrievalServerError, match=r"\(400\): index .* has no dense part"):
            client.search("x", 3, mode="dense")
    served = [r.getMessage() for r in caplog.records if r.name == "agentkd.tools.retrieval.server"]
    assert len(served) == 3 and all('"POST /search HTTP/1.1" 400' in m for m in served), served  # none retried
    import httpx

    r = httpx.post(server.url + "/search", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]
    assert httpx.get(server.url + "/nope").status_code == 404


def test_search_tool_through_the_server(server, tmp_path):
    tools = build_tools(ToolsConfig(search={"url": server.url, "k": 2}, cache=str(tmp_path / "c.sqlite")))
    out = tools["web_search"]("Which strait separates Russia from Alaska?")
    assert out.startswith("[1] Bering Strait (score ") and "[2] " in out and "[3] " not in out
    assert tools["web_search"]("Which strait separates Russia from Alaska?") == out
    assert tools["web_search"].cache.stats()["hits"] == 1


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first `fail` requests, then a valid search result; or sleeps `delay` seconds."""

    fail = 0
    delay = 0.0
    seen = 0

    def log_message(self, *args):
        pass

    def do_POST(self):
        cls = type(self)
        cls.seen += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        if cls.delay:
            time.sleep(cls.delay)
        if cls.seen <= cls.fail:
            body, code = b'{"error": "warming up"}', 503
        else:
            body, code = json.dumps({"hits": [{"rank": 1, "score": 1.0, "id": "a", "title": "A", "text": "t"}]}).encode(), 200
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # the client gave up (timeout test): expected
        pass


def _serve(handler):
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_client_retries_5xx_then_succeeds():
    handler = type("H", (_Flaky,), {"fail": 2, "seen": 0})
    httpd, url = _serve(handler)
    try:
        hits = RetrievalClient(url, retries=3, backoff_s=0.01).search("q")
        assert [h.id for h in hits] == ["a"] and handler.seen == 3
        handler.seen, handler.fail = 0, 10
        with pytest.raises(RetrievalServerError, match="failed after 3 attempt"):
            RetrievalClient(url, retries=2, backoff_s=0.01).search("q")
        assert handler.seen == 3
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_client_times_out_and_retries():
    handler = type("H", (_Flaky,), {"delay": 2.0, "seen": 0})
    httpd, url = _serve(handler)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RetrievalServerError, match="ReadTimeout"):
            RetrievalClient(url, timeout_s=0.3, retries=1, backoff_s=0.01).search("q")
        assert time.perf_counter() - t0 < 1.5
        assert handler.seen == 2
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_client_connection_refused_is_retried_then_reported():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(RetrievalServerError, match=r"failed after 3 attempt.*ConnectError"):
        RetrievalClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.05).search("q")
    assert 0.15 <= time.perf_counter() - t0 < 5  # two backoffs: 0.05 + 0.1


def test_cli_serve_subprocess(bm25_dir):
    proc = subprocess.Popen([sys.executable, "-c", "from agentkd.cli import main; main()", "index", "serve", str(bm25_dir), "--port", "0"],
                            cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "serving" not in line:
            assert time.monotonic() < deadline and proc.poll() is None, line
            line = proc.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        hits = RetrievalClient(url, timeout_s=10, retries=2).search("capital of Botswana", 1)
        assert hits[0].id == "Gaborone"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
