"""An OpenAI-compatible stand-in teacher for tests and benchmarks: scripted CodeAct replies, a fixed
latency, and injected faults (429 with Retry-After, 500, timeouts, malformed JSON) on a share of requests.

    with StandinServer(latency_s=0.3, faults={"429": 0.1, "500": 0.1}) as srv:
        ...  # point a client at srv.url; srv.requests logs every request it answered or failed

Replies: the FTP first pass (a system prompt asking to think step by step) gets a two-paragraph
chain of thought; an agent turn gets a code action that prints; a later
turn gets `final_answer(<expected>)` (after `actions` code actions), where the expected answer is `answer_for(question)`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def answer_for(question: str) -> str:
    return "ans-" + hashlib.sha256(question.encode()).hexdigest()[:8]


def _question(messages: list[dict[str, Any]]) -> str:
    for m in messages:
        if m["role"] == "user":
            text = m.get("content") or ""
            match = re.search(r"Task:\s*(.*)", text, re.S)
            return (match.group(1) if match else text).strip().split("\n\nBegin your first Thought")[0]
    return ""


def scripted_reply(messages: list[dict[str, Any]], actions: int = 1) -> str:
    q = _question(messages)
    system = next((m.get("content") or "" for m in messages if m["role"] == "system"), "")
    if "step by step" in system.lower() and "Thought:" not in system:
        return f"I should look up the key facts about: {q[:60]}\n\nThen combine them.\nAnswer: {answer_for(q)}"
    turns = sum(m["role"] == "assistant" for m in messages)
    if messages[-1]["role"] == "assistant":  # prefill: continue the given text
        turns -= 1
    if turns < actions:
        return f" Step {turns}: compute something first.\nCode:\n```py\nx = 21 * {turns + 2}\nprint(x)\n```"
    return f"Thought: I have what I need.\nCode:\n```py\nfinal_answer({answer_for(q)!r})\n```"


class StandinServer:
    def __init__(self, *, latency_s: float = 0.0, faults: dict[str, float] | None = None, seed: int = 0,
                 retry_after_s: int = 1, timeout_sleep_s: float = 3.0, actions: int = 1, host: str = "127.0.0.1",
                 port: int = 0):
        self.latency_s = latency_s
        self.faults = dict(faults or {})
        self.retry_after_s = retry_after_s
        self.timeout_sleep_s = timeout_sleep_s
        self.actions = actions
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out as separate writes: without NODELAY, Nagle + delayed ACK add 40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, json.dumps({"object": "list", "data": [{"id": "standin", "object": "model"}]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fault = outer._draw()
                entry = {"question": _question(body.get("messages", [])), "fault": fault, "t": time.time(),
                         "body": body}
                with outer._lock:
                    outer.requests.append(entry)
                if outer.latency_s:
                    time.sleep(outer.latency_s)
                try:
                    if fault == "429":
                        err = {"error": {"message": "rate limited", "type": "rate_limit_error", "code": 429}}
                        self._send(429, json.dumps(err).encode(), {"Retry-After": str(outer.retry_after_s)})
                    elif fault == "500":
                        self._send(500, b'{"error": {"message": "internal error", "type": "server_error"}}')
                    elif fault == "timeout":
                        time.sleep(outer.timeout_sleep_s)
                        self._send(200, outer._completion(body))
                    elif fault == "malformed":
                        self._send(200, b'{"id": "x", "choices": [{"index": 0, "message": {"role": "assist')
                    else:
                        self._send(200, outer._completion(body))
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # many clients connect at once in benchmarks

        self._httpd = Server((host, port), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{host}:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _draw(self) -> str | None:
        with self._lock:
            r = self._rng.random()
        acc = 0.0
        for kind, p in self.faults.items():
            acc += p
            if r < acc:
                return kind
        return None

    def _completion(self, body: dict[str, Any]) -> bytes:
        msgs = body.get("messages", [])
        text = scripted_reply(msgs, self.actions)
        n = int(body.get("n") or 1)
        prompt = sum(len(str(m.get("content", "")).split()) for m in msgs)
        out = len(text.split())
        return json.dumps({
            "id": "chatcmpl-standin", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "standin"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                        for i in range(n)],
            "usage": {"prompt_tokens": prompt, "completion_tokens": out * n, "total_tokens": prompt + out * n},
        }).encode()

    def start(self) -> StandinServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
