"""A small HTTP retrieval server (stdlib `ThreadingHTTPServer`), so several collection workers share one
loaded index. Binds 127.0.0.1 by default.

    GET  /health          -> {"status": "ok", "fingerprint": {...}, "count": N, "kind": ...}
    POST /search          {"query": str, "k": int, "mode": str|null}       -> {"hits": [Hit, ...]}
    POST /search_batch    {"queries": [str], "k": int, "mode": str|null}   -> {"results": [[Hit, ...], ...]}

Bad requests (and modes the index lacks) get 400 with {"error": message}; other failures get 500.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentkd.core.config import ConfigError

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20


class BadRequest(Exception):
    pass


def _handler(retriever: Any, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, code: int, obj: Any) -> None:
            body = json.dumps(obj, ensure_ascii=False).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/health":
                meta = getattr(retriever, "meta", {})
                self._send(200, {"status": "ok", "fingerprint": retriever.fingerprint(),
                                 "count": meta.get("count"), "kind": meta.get("kind")})
            else:
                self._send(404, {"error": f"no such endpoint {self.path}"})

        def _body(self) -> dict[str, Any]:
            n = int(self.headers.get("Content-Length") or 0)
            if n <= 0 or n > MAX_BODY:
                raise BadRequest(f"body must be 1..{MAX_BODY} bytes of JSON")
            try:
                data = json.loads(self.rfile.read(n))
            except ValueError as e:
                raise BadRequest(f"invalid JSON: {e}") from None
            if not isinstance(data, dict):
                raise BadRequest("body must be a JSON object")
            k = data.get("k", 3)
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
                raise BadRequest("k must be an integer in 1..1000")
            if data.get("mode") not in (None, "auto", "bm25", "dense", "hybrid"):
                raise BadRequest("mode must be one of auto, bm25, dense, hybrid")
            return data

        def _search(self, query: Any, k: int, mode: str | None) -> list[dict[str, Any]]:
            if not isinstance(query, str) or not query.strip():
                raise BadRequest("query must be a non-empty string")
            with lock:
                return [h.to_dict() for h in retriever.search(query, k, mode)]

        def do_POST(self) -> None:
            path = self.path.rstrip("/")
            try:
                if path == "/search":
                    data = self._body()
                    self._send(200, {"hits": self._search(data.get("query"), data.get("k", 3), data.get("mode"))})
                elif path == "/search_batch":
                    data = self._body()
                    queries = data.get("queries")
                    if not isinstance(queries, list):
                        raise BadRequest("queries must be a list of strings")
                    results = [self._search(q, data.get("k", 3), data.get("mode")) for q in queries]
                    self._send(200, {"results": results})
                else:
                    self._send(404, {"error": f"no such endpoint {self.path}"})
            except (BadRequest, ConfigError) as e:  # ConfigError: e.g. a mode this index lacks
                self._send(400, {"error": str(e)})
            except Exception as e:
                log.exception("search failed")
                self._send(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


class RetrievalServer:
    """`RetrievalServer(retriever, host, port).start()` serves in a background thread; `serve_forever()` blocks.
    Port 0 picks a free port (see `.url`)."""

    def __init__(self, retriever: Any, host: str = "127.0.0.1", port: int = 8765):
        self.retriever = retriever
        self.httpd = ThreadingHTTPServer((host, port), _handler(retriever, threading.Lock()))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RetrievalServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="retrieval-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> RetrievalServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
