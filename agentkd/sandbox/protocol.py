"""Host side of the worker protocol: a framed-JSON channel over one Unix-socket connection.

The framing (4-byte big-endian length + UTF-8 JSON) is defined once, in `agentkd.sandbox.worker`.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from agentkd.sandbox.worker import ChannelClosed, encode, recv_exact

__all__ = ["Channel", "ChannelClosed", "accept_hello", "peer_credentials", "took_hello"]
_INCOMPLETE = object()


class Channel:
    """One kernel's connection. `recv(deadline)` raises TimeoutError past `deadline` (time.monotonic)."""

    def __init__(self, sock: socket.socket, kid: int = 0, pid: int | None = None):
        self.sock, self.kid, self.pid = sock, kid, pid
        self.role = "kernel"  # or "root" (a SandboxPool episode's root process)
        self.buf = bytearray()
        self.hello: dict = {}  # the kernel's hello (kernel 0's carries its probe of the walls)
        self.peer: tuple[int, int, int] | None = None  # (pid, uid, gid) of the connecting process, as the host sees it

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

    async def asend(self, obj: Any) -> None:
        """`send` for the event loop's thread: a message that fits the socket buffer (all but huge ones)
        goes out in one non-blocking send; the rest waits for the socket on the loop."""
        import asyncio

        data = encode(obj)
        sock = self.sock
        if sock.gettimeout() != 0.0:  # a Python-level check: no fcntl round trip when already non-blocking
            sock.setblocking(False)
        try:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent < len(data):
                await asyncio.get_running_loop().sock_sendall(sock, memoryview(data)[sent:])
        except OSError as e:
            raise ChannelClosed(str(e)) from None

    async def arecv(self, deadline: float | None = None) -> Any:
        """`recv` for the event loop's thread: waits without blocking it (deadline: time.monotonic). One
        reader callback and one timer per message, no task (this runs once per sandbox run)."""
        import asyncio

        msg = self._frame()
        if msg is not _INCOMPLETE:
            return msg
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        sock = self.sock
        if sock.gettimeout() != 0.0:
            sock.setblocking(False)

        def readable() -> None:
            try:
                chunk = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                chunk, err = b"", str(e)
            else:
                err = "connection closed"
            if fut.done():
                return
            if not chunk:
                fut.set_exception(ChannelClosed(err))
                return
            self.buf += chunk
            if self._complete():
                fut.set_result(None)

        def expired() -> None:
            if not fut.done():
                fut.set_exception(TimeoutError("no answer from the worker"))

        loop.add_reader(sock.fileno(), readable)
        timer = None if deadline is None else loop.call_at(loop.time() + (deadline - time.monotonic()), expired)
        try:
            await fut
        finally:
            loop.remove_reader(sock.fileno())
            if timer is not None:
                timer.cancel()
        return self._frame()

    def _complete(self) -> bool:
        from agentkd.sandbox.worker import HDR, MAX_MSG

        if len(self.buf) < HDR.size:
            return False
        (n,) = HDR.unpack_from(self.buf)
        return n > MAX_MSG or len(self.buf) >= HDR.size + n

    def _frame(self) -> Any:
        """The next whole message in the buffer (removed from it), or _INCOMPLETE."""
        import json

        from agentkd.sandbox.worker import HDR, MAX_MSG

        if not self._complete():
            return _INCOMPLETE
        (n,) = HDR.unpack_from(self.buf)
        if n > MAX_MSG:
            raise ChannelClosed(f"message of {n} bytes exceeds the protocol limit")
        data = bytes(self.buf[HDR.size:HDR.size + n])
        del self.buf[:HDR.size + n]
        return json.loads(data.decode("utf-8", "surrogatepass"))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def peer_credentials(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a Unix socket, translated by the kernel into this
    process's namespaces (SO_PEERCRED; Linux)."""
    try:
        return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except (OSError, AttributeError):
        return None


def took_hello(ch: Channel, hello: dict) -> Channel:
    """Record a checked hello on its channel: kid, pid, role, the hello itself, and the peer's credentials."""
    ch.kid, ch.pid, ch.role = int(hello.get("kid", 0)), hello.get("pid"), str(hello.get("role", "kernel"))
    ch.hello, ch.peer = hello, peer_credentials(ch.sock)
    return ch


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
        return took_hello(ch, hello)
