"""A local collect teacher served over the real OpenAI-compatible path: `agentkd serve` as a subprocess.

    with served_teacher(cfg.teacher, timeout_s=600) as teacher:   # ModelConfig(model="openai/NAME", api_base=...)
        collect(cfg.model_copy(update={"teacher": teacher}), out)

The server binds a free 127.0.0.1 port (it prints its URL), is ready when /health answers, and is stopped
(SIGTERM, then SIGKILL) when the block ends, on error and on Ctrl-C; it also gets SIGTERM if this process
dies (PR_SET_PDEATHSIG), so no server outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from agentkd.core.errors import PreflightError
from agentkd.models.config import ModelConfig

QUEUED_TIMEOUT_S = 3600.0
_URL = re.compile(r"on (http://127\.0\.0\.1:\d+/v1)")


def is_local(model: ModelConfig) -> bool:
    """A model agentkd loads itself (embedded:NAME, local:PATH, a model folder or file), not an API model."""
    if model.api_base:
        return False
    spec = model.model
    return spec.startswith(("embedded:", "local:")) or ("/" in spec and Path(spec).expanduser().exists())


def served_name(spec: str) -> str:
    return re.sub(r"[^\w.-]+", "-", spec.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1]) or "teacher"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def stop(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def served_teacher(model: ModelConfig, *, timeout_s: float = 600.0, max_tokens: int | None = None,
                   ) -> Iterator[ModelConfig]:
    """Serve `model` with `agentkd serve`; yields the ModelConfig that reaches it as an API teacher."""
    name = served_name(model.model)
    limit = max(4096, max_tokens or 0, model.sampling.max_tokens)
    cmd = [sys.executable, "-m", "agentkd", "serve", model.model, "--port", "0", "--host", "127.0.0.1",
           "--device", model.device, "--served-name", name, "--set", f"dtype={model.dtype}",
           "--set", f"max_tokens_limit={limit}"]
    # the teacher's batching settings (collect.teacher.batch) go to the server that loads it
    cmd += [a for key, value in model.batch.model_dump().items() for a in ("--set", f"batch.{key}={value}")]
    if model.adapter:
        cmd += ["--adapter", model.adapter]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, env=os.environ.copy(), start_new_session=True, preexec_fn=_die_with_parent)
    tail: deque[str] = deque(maxlen=20)
    found: list[str] = []

    def drain() -> None:  # keeps the pipe from filling; remembers the URL line and the last lines
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            if not found and (m := _URL.search(line)):
                found.append(m.group(1))

    threading.Thread(target=drain, daemon=True, name="agentkd-serve-log").start()
    try:
        deadline = time.monotonic() + timeout_s
        url = None
        while time.monotonic() < deadline:
            if found and url is None:
                url = found[0]
            if url is not None and _healthy(url):
                break
            if proc.poll() is not None:
                last = next((ln for ln in reversed(tail) if ln.strip()), "no output")
                raise PreflightError(f"agentkd serve {model.model} exited with code {proc.returncode} before it was "
                                     f"ready: {last}")
            time.sleep(0.1)
        else:
            raise PreflightError(f"agentkd serve {model.model} was not ready within {timeout_s:.0f} s "
                                 "(run.serve_timeout_s)")
        # the server runs one generation at a time, so a request waits behind the others in flight: a per-request
        # timeout sized for a remote API would expire in the queue, be retried, and pile up abandoned generations
        yield model.model_copy(update={"model": f"openai/{name}", "api_base": url, "adapter": None,
                                       "timeout_s": max(model.timeout_s, QUEUED_TIMEOUT_S)})
    finally:
        stop(proc)
