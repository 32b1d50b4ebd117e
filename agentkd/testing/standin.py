"""A test double: an OpenAI-compatible stand-in teacher for tests and benchmarks: scripted CodeAct replies, a fixed
latency, and injected faults (429 with Retry-After, 500, timeouts, malformed JSON, and the client errors no retry
can fix: 400, 401, 403, 404 with OpenAI-style error bodies) on a share of requests.

    with StandinServer(latency_s=0.3, faults={"429": 0.1, "500": 0.1}) as srv:
        ...  # point a client at srv.url; srv.requests logs every request it answered or failed

It stands for a teacher that runs on other machines, so it spends as little of this machine's CPU as it
can: one asyncio loop in one thread (HTTP/1.1 with keep-alive, latency as a timer, not a sleeping thread
per request), so a benchmark's CPU goes to the client it measures.

Replies are chosen from the request's shape, never from agentkd's prompt wording:

* a request with no `stop` sequences and no assistant turn is a plain question (the FTP first pass, which
  agentkd sends without stops): it gets a short chain of thought ending in `Answer: <expected>`;
* any other request is an agent turn (agentkd sends those with its CodeAct stop sequences): the first
  `actions` turns get a code action that prints, later ones `final_answer(<expected>)`.

The expected answer is `answer_for(question)`. The server is told the questions up front
(`StandinServer(questions=[...])`, or by setting `.questions`) and takes as a request's question the
longest of them that its first user turn contains; with none given, or none found, the whole first user
turn stands for the question.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any


def answer_for(question: str) -> str:
    return "ans-" + hashlib.sha256(question.encode()).hexdigest()[:8]


def question_of(messages: list[dict[str, Any]], questions: list[str] | tuple[str, ...] = ()) -> str:
    """The longest of `questions` (longest first) that the first user turn contains, else that whole turn."""
    text = next(((m.get("content") or "") for m in messages if m.get("role") == "user"), "")
    if not isinstance(text, str):  # content parts: join their text
        text = " ".join(str(p.get("text", "")) for p in text if isinstance(p, dict))
    return next((q for q in questions if q in text), text.strip())


def is_plain_question(body: dict[str, Any]) -> bool:
    """No stop sequences and no assistant turn: the FTP first pass (agent turns always carry stops)."""
    return not body.get("stop") and not any(m.get("role") == "assistant" for m in body.get("messages", []))


def scripted_reply(body: dict[str, Any], actions: int = 1, questions: list[str] | tuple[str, ...] = ()) -> str:
    """The stand-in's reply to one chat-completion request body (see the module docstring)."""
    messages = body.get("messages", [])
    q = question_of(messages, questions)
    if is_plain_question(body):
        return f"I should look up the key facts about: {q[:60]}\n\nThen combine them.\nAnswer: {answer_for(q)}"
    turns = sum(m["role"] == "assistant" for m in messages)
    if messages and messages[-1]["role"] == "assistant":  # prefill: continue the given text
        turns -= 1
    if turns < actions:
        return f" Step {turns}: compute something first.\nCode:\n```py\nx = 21 * {turns + 2}\nprint(x)\n```"
    return f"Thought: I have what I need.\nCode:\n```py\nfinal_answer({answer_for(q)!r})\n```"


# OpenAI-style error bodies for the injected client errors (what api.openai.com answers for each)
_HTTP_ERRORS: dict[str, dict[str, Any]] = {
    "400": {"message": "This model's maximum context length is 8192 tokens. However, your messages resulted in "
                       "9000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"},
    "401": {"message": "Incorrect API key provided: sk-stand***in.", "type": "invalid_request_error",
            "param": None, "code": "invalid_api_key"},
    "403": {"message": "Project does not have access to this model.", "type": "invalid_request_error",
            "param": None, "code": "model_not_allowed"},
    "404": {"message": "The model does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": None, "code": "model_not_found"},
}


def _response(status: int, payload: bytes, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
             f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in (extra or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class StandinServer:
    def __init__(self, *, latency_s: float = 0.0, faults: dict[str, float] | None = None, seed: int = 0,
                 retry_after_s: int = 1, timeout_sleep_s: float = 3.0, actions: int = 1, host: str = "127.0.0.1",
                 port: int = 0, questions: Iterable[str] = ()):
        self.latency_s = latency_s
        self.faults = dict(faults or {})
        self.retry_after_s = retry_after_s
        self.timeout_sleep_s = timeout_sleep_s
        self.actions = actions
        self.questions = questions
        self._rng = random.Random(seed)
        self.requests: list[dict[str, Any]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(1024)  # many clients connect at once in benchmarks
        self.url = f"http://{host}:{self._sock.getsockname()[1]}/v1"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[asyncio.Task] = set()

    @property
    def questions(self) -> tuple[str, ...]:
        return self._questions

    @questions.setter
    def questions(self, questions: Iterable[str]) -> None:
        # longest first, so "question 1" never claims a request for "question 12"
        self._questions = tuple(sorted(set(questions), key=len, reverse=True))

    @property
    def open_connections(self) -> int:
        """Client connections the server holds open now (accepted, not yet dropped)."""
        return len(self._conns)

    def _draw(self) -> str | None:
        r = self._rng.random()  # only the server's loop thread draws
        acc = 0.0
        for kind, p in self.faults.items():
            acc += p
            if r < acc:
                return kind
        return None

    def _completion(self, body: dict[str, Any]) -> bytes:
        msgs = body.get("messages", [])
        text = scripted_reply(body, self.actions, self._questions)
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

    # -- HTTP -------------------------------------------------------------------------------------------
    async def _answer(self, method: str, raw: bytes) -> bytes:
        """The whole HTTP response to one request, sent once the latency (and any injected delay) passed."""
        if method == "GET":
            models = {"object": "list", "data": [{"id": "standin", "object": "model"}]}
            return _response(200, json.dumps(models).encode())
        if method != "POST":
            return _response(405, b'{"error": {"message": "method not allowed"}}')
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return _response(400, b'{"error": {"message": "request body is not JSON"}}')
        fault = self._draw()
        self.requests.append({"question": question_of(body.get("messages", []), self._questions), "fault": fault,
                              "t": time.time(), "body": body})
        # the answer is made now and only sent after the latency: a burst of replies due together goes out
        # at once, as from a remote server, instead of queueing behind this process's work
        if fault == "429":
            err = {"error": {"message": "rate limited", "type": "rate_limit_error", "code": 429}}
            answer = _response(429, json.dumps(err).encode(), {"Retry-After": str(self.retry_after_s)})
        elif fault == "500":
            answer = _response(500, b'{"error": {"message": "internal error", "type": "server_error"}}')
        elif fault in _HTTP_ERRORS:  # errors no retry can fix: a client must stop, not retry
            answer = _response(int(fault), json.dumps({"error": _HTTP_ERRORS[fault]}).encode())
        elif fault == "malformed":
            answer = _response(200, b'{"id": "x", "choices": [{"index": 0, "message": {"role": "assist')
        else:
            answer = _response(200, self._completion(body))
        delay = self.latency_s + (self.timeout_sleep_s if fault == "timeout" else 0.0)
        if delay:
            await asyncio.sleep(delay)
        return answer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = asyncio.current_task()
        self._conns.add(conn)
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:  # one write per response anyway; no Nagle delay on the client's side either
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:  # HTTP/1.1 keep-alive: one request after another on this connection
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method = head[0].split(" ", 1)[0]
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (line.partition(":") for line in head[1:] if line)}
                if "content-length" not in headers and method == "POST":  # chunked bodies are not read
                    body = b'{"error": {"message": "Content-Length required"}}'
                    writer.write(_response(411, body, {"Connection": "close"}))
                    return
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                response = await self._answer(method, raw)
                if writer.is_closing():
                    return
                writer.write(response)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError, IndexError):
            pass  # the client went away, or sent something that is not HTTP: drop the connection
        except asyncio.CancelledError:
            pass  # stop(): end quietly (a cancelled connection task makes asyncio log an error with traceback)
        finally:
            self._conns.discard(conn)
            writer.close()

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> StandinServer:
        started = threading.Event()
        self._loop = loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(asyncio.start_server(self._serve, sock=self._sock, limit=2**22))
            started.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for conn in list(self._conns):
                    conn.cancel()
                loop.run_until_complete(asyncio.gather(*self._conns, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="standin-server")
        self._thread.start()
        started.wait()
        return self

    def stop(self) -> None:
        """Stop accepting and drop every open connection (a request in flight gets no answer)."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
