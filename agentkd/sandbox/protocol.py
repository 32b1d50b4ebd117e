"""Host side of the worker protocol: a framed-JSON channel over one Unix-socket connection.

The framing (4-byte big-endian length + UTF-8 JSON) is defined once, in `agentkd.sandbox.worker`.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from agentkd.sandbox.worker import ChannelClosed, encode, recv_exact

__all__ = ["Channel", "ChannelClosed", "accept_hello"]


class Channel:
    """One kernel's connection. `recv(deadline)` raises TimeoutError past `deadline` (time.monotonic)."""

    def __init__(self, sock: socket.socket, kid: int = 0, pid: int | None = None):
        self.sock, self.kid, self.pid = sock, kid, pid
        self.role = "kernel"  # or "root" (a SandboxPool episode's root process)
        self.buf = bytearray()

    def send(self, obj: Any) -> None:
        try:
            self.sock.settimeout(None)
            self.sock.sendall(encode(obj))
        except OSError as e:
            raise ChannelClosed(str(e)) from None

    def recv(self, deadline: float | None = None) -> Any:
        import json

        from agentkd.sandbox.worker import HDR, MAX_MSG

        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            self.sock.settimeout(left)
        else:
            self.sock.settimeout(None)
        try:
            (n,) = HDR.unpack(recv_exact(self.sock, 4, self.buf))
            if n > MAX_MSG:
                raise ChannelClosed(f"message of {n} bytes exceeds the protocol limit")
            return json.loads(recv_exact(self.sock, n, self.buf).decode("utf-8", "surrogatepass"))
        except TimeoutError:
            raise TimeoutError("no answer from the worker") from None
        except (ConnectionError, OSError) as e:
            raise ChannelClosed(str(e)) from None

    async def arecv(self, deadline: float | None = None) -> Any:
        """`recv` for the event loop's thread: waits without blocking it (deadline: time.monotonic)."""
        import asyncio
        import json

        from agentkd.sandbox.worker import HDR, MAX_MSG

        loop = asyncio.get_running_loop()

        async def exact(n: int) -> bytes:
            while len(self.buf) < n:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("no answer from the worker")
                try:
                    chunk = await asyncio.wait_for(loop.sock_recv(self.sock, max(65536, n - len(self.buf))), left)
                except (ConnectionError, OSError) as e:
                    if isinstance(e, TimeoutError):
                        raise TimeoutError("no answer from the worker") from None
                    raise ChannelClosed(str(e)) from None
                if not chunk:
                    raise ChannelClosed("connection closed")
                self.buf += chunk
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out

        self.sock.setblocking(False)
        (n,) = HDR.unpack(await exact(4))
        if n > MAX_MSG:
            raise ChannelClosed(f"message of {n} bytes exceeds the protocol limit")
        return json.loads((await exact(n)).decode("utf-8", "surrogatepass"))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def accept_hello(listener: socket.socket, token: str, deadline: float) -> Channel:
    """Accept one kernel connection and check its hello; connections with a wrong token are dropped."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the worker did not connect in time")
        listener.settimeout(left)
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            raise TimeoutError("the worker did not connect in time") from None
        ch = Channel(conn)
        try:
            # once connected, give the hello its own time: under load it can arrive after the accept slice
            hello = ch.recv(time.monotonic() + 5.0)
        except (TimeoutError, ChannelClosed):
            ch.close()
            continue
        if not isinstance(hello, dict) or hello.get("op") != "hello" or hello.get("token") != token:
            ch.close()
            continue
        ch.kid, ch.pid, ch.role = int(hello.get("kid", 0)), hello.get("pid"), str(hello.get("role", "kernel"))
        return ch
