"""A minimal keep-alive HTTP/1.1 client on asyncio protocols, for plain-http local model servers.

`PlainHttpPool(host, port).post(request_bytes, timeout_s)` sends one whole request on an idle kept-alive
connection (or a new one) and returns (status, lower-cased headers, body). It reads Content-Length,
chunked and read-until-close bodies. No TLS, proxies, redirects or compression: `OpenAICompatModel`
uses it only for `http://` endpoints without a proxy (where it costs about a third of aiohttp's CPU per
request) and aiohttp for everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket


class ConnectionLost(Exception):
    """The server closed the connection before a complete response arrived."""

    def __init__(self, got_bytes: bool):
        super().__init__("server closed the connection" + (" mid-response" if got_bytes else ""))
        self.got_bytes = got_bytes


class Http11Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection answering one request at a time (Content-Length, chunked or
    read-until-close bodies)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buf = bytearray()
        self._waiter: asyncio.Future | None = None
        self._head: tuple[int, dict[str, str]] | None = None
        self._body_start = 0
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is not None and not self._waiter.done():
            self._parse(eof=False)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost finishes the response or fails it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._parse(eof=True)
            if not self._waiter.done():
                self._waiter.set_exception(ConnectionLost(bool(self._buf)))

    def request(self, data: bytes) -> asyncio.Future:
        self._buf.clear()
        self._head = None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)  # type: ignore[union-attr]
        return self._waiter

    def expire(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TimeoutError())

    def _parse(self, eof: bool) -> None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            try:
                status = int(rest[:3])
            except ValueError:
                self._waiter.set_exception(ValueError(f"bad HTTP status line {lines[0][:80]!r}"))  # type: ignore[union-attr]
                return
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            self._head = (status, headers)
            self._body_start = end + 4
            conn = headers.get("connection", "").lower()
            self.reusable = conn != "close" and (version != "HTTP/1.0" or conn == "keep-alive")
        status, headers = self._head
        start = self._body_start
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            pos = start
            while True:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    return
                size = int(bytes(buf[pos:nl]).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    if buf.find(b"\r\n\r\n", nl) < 0:  # the last chunk, (trailers,) then an empty line
                        return
                    break
                if len(buf) < nl + 2 + size + 2:
                    return
                body += buf[nl + 2:nl + 2 + size]
                pos = nl + 2 + size + 2
            self._waiter.set_result((status, headers, bytes(body)))  # type: ignore[union-attr]
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if len(buf) - start >= n:
                self._waiter.set_result((status, headers, bytes(buf[start:start + n])))  # type: ignore[union-attr]
        elif eof or status in (204, 304):
            self.reusable = False
            self._waiter.set_result((status, headers, bytes(buf[start:])))  # type: ignore[union-attr]


class PlainHttpPool:
    """A keep-alive pool of `Http11Connection` connections to one `http://host:port` origin.

    The high-concurrency path (local vLLM / SGLang / `agentkd serve` on plain HTTP): a request costs
    about a third of aiohttp's client CPU. No TLS, proxies, redirects or compression (none is asked for:
    no Accept-Encoding is sent); `OpenAICompatModel` uses aiohttp for anything else."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: list[Http11Connection] = []

    async def post(self, data: bytes, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
        """Send one whole request; (status, lower-cased headers, body). Raises TimeoutError, OSError or
        `ConnectionLost`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return await self._send(conn, data, deadline)
            except ConnectionLost as e:
                if e.got_bytes:
                    raise
                # a kept-alive connection the server had closed: the request never reached it, send anew
        _, conn = await asyncio.wait_for(loop.create_connection(Http11Connection, self.host, self.port),
                                         max(0.0, deadline - loop.time()))
        return await self._send(conn, data, deadline)

    async def _send(self, conn: Http11Connection, data: bytes, deadline: float) -> tuple[int, dict[str, str], bytes]:
        timer = asyncio.get_running_loop().call_at(deadline, conn.expire)
        try:
            result = await conn.request(data)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        finally:
            timer.cancel()
        if conn.reusable and not conn.closed:
            self._idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()
        return result

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
