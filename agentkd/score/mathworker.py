"""math-verify comparisons in a helper process, each under a wall-clock limit that always holds.

Why a process: math-verify's own timeout uses `signal.alarm`, which (checked with math-verify 0.9.0)

* works only in the main thread: `parse`/`verify` raise ValueError when called with a timeout from any
  other thread (evaluation scores from worker threads), and without one a pathological expression
  (`(x+1)^{100000}`, towers of powers) runs unbounded (each still running when stopped at 2 s here);
* takes whole seconds only, and cannot interrupt a long C-level call (a huge integer power, a sympy
  routine in C), since Python runs signal handlers between bytecodes.

So one long-lived child process does the work. Measured here (2 shared cores, load ~11): start-up
1-5 s once (importing math-verify/sympy), then 7 ms per comparison through the pipe against 4 ms for
math-verify called in-process (the difference: the pipe round trip and the child waiting for a CPU). Plain numbers and forms equal after
light normalisation never reach it (`agentkd.score.math`), so GSM-Hard/AIME-style runs barely use it.
Inside it a float `setitimer` stops a slow comparison (no restart needed); if the child does not answer
within the limit plus a grace second, it is killed and a fresh one started for the next comparison.
The client is thread-safe (one comparison at a time) and works from any thread.

Run as `python -m agentkd.score.mathworker`: reads {"g": gold, "p": pred, "t": seconds} JSON lines on
stdin, writes {"eq": bool, "err": null | "timeout" | "error: ..."} lines on stdout.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

GRACE_S = 1.0  # extra time the parent gives the child's own timer before killing the child


class _Expired(BaseException):
    """Raised by the child's timer. A BaseException: math-verify catches Exception inside its comparisons
    and would otherwise carry on with the next candidate pair, past the limit."""


def _child() -> None:
    import logging
    import signal

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" warnings: we time it
    from math_verify import parse, verify

    def expire(signum, frame):
        raise _Expired()

    signal.signal(signal.SIGALRM, expire)
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        reply: dict = {"eq": False, "err": None}
        try:
            signal.setitimer(signal.ITIMER_REAL, max(0.01, float(req.get("t", 5.0))))
            try:
                gold = parse(f"${req['g']}$", parsing_timeout=None)
                pred = parse(f"${req['p']}$", parsing_timeout=None)
                reply["eq"] = bool(gold and pred and verify(gold, pred, timeout_seconds=None))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Expired:
            reply["err"] = "timeout"
        except Exception as e:  # math-verify failing on odd input is a "not equal", reported
            reply["err"] = f"error: {type(e).__name__}"
        out.write(json.dumps(reply) + "\n")
        out.flush()


class MathVerifyWorker:
    """Client side: sends one comparison at a time to the child, restarting it when it stops answering."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        import importlib.util

        if importlib.util.find_spec("math_verify") is None:
            from agentkd.core.config import ConfigError

            raise ConfigError("math-verify is not installed: pip install 'agentkd[score]'", path="scorer math_equiv")
        root = str(Path(__file__).resolve().parents[2])  # so the child imports this same agentkd
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        return subprocess.Popen([sys.executable, "-m", "agentkd.score.mathworker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)

    def compare(self, gold: str, pred: str, timeout_s: float, *, start_wait_s: float = 60.0) -> tuple[bool, str | None]:
        """(equivalent, None) or (False, "timeout" | "error: ..."). Returns within about timeout_s + 1 s of
        work (the child's start-up, ~1 s once, is not counted against the limit)."""
        with self._lock:
            fresh = self._proc is None or self._proc.poll() is not None
            if fresh:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write((json.dumps({"g": gold, "p": pred, "t": timeout_s}) + "\n").encode())
            except OSError:
                self._kill()
                return False, "error: math-verify worker died"
            line = self._readline(proc, timeout_s + GRACE_S + (start_wait_s if fresh else 0.0))
            if line is None:
                code = proc.poll()
                self._kill()
                return False, "timeout" if code is None else f"error: math-verify worker exited ({code})"
            reply = json.loads(line)
            return bool(reply["eq"]), reply.get("err")

    @staticmethod
    def _readline(proc: subprocess.Popen, wait_s: float) -> bytes | None:
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + wait_s
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:  # the child died
                return None
            buf += chunk
        return buf

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            self.restarts += 1

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.stdin.close()  # type: ignore[union-attr]
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None


_worker: MathVerifyWorker | None = None
_worker_lock = threading.Lock()


def worker() -> MathVerifyWorker:
    """The process-wide worker (closed at exit)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = MathVerifyWorker()
            atexit.register(_worker.close)
        return _worker


if __name__ == "__main__":
    _child()
