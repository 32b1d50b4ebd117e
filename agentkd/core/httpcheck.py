"""One quick GET for pre-flight checks (stdlib only: no client library is imported before a run starts)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

TIMEOUT_S = 5.0


def get_json(url: str, *, key: str | None = None, timeout: float = TIMEOUT_S) -> Any:
    """GET `url` (with a bearer `key` if given); its body as JSON, or None if it is not JSON.
    urllib's errors propagate: `HTTPError` for an answer with an error status, `URLError`/`OSError` for none."""
    headers = {"Accept": "application/json", "User-Agent": "agentkd"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        raw = resp.read()
    try:
        return json.loads(raw)
    except ValueError:
        return None


def error_reason(e: Exception) -> str:
    """The first line of why a request got no answer (refused, timed out, unreachable)."""
    reason = getattr(e, "reason", None) or e
    return str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
