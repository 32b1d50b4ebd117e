"""Client for the retrieval server: per-request timeouts, retries with exponential backoff on connection
errors, timeouts and 5xx answers; 4xx answers fail at once (retrying would not help)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from agentkd.tools.base import ToolError
from agentkd.tools.retrieval.types import Hit

log = logging.getLogger(__name__)


class RetrievalServerError(ToolError):
    pass


class RetrievalClient:
    def __init__(self, url: str, *, timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 0.25):
        import httpx

        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s))
        self._fingerprint: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self._http.request(method, self.url + path, json=body)
            except httpx.TransportError as e:  # connect errors, timeouts, dropped connections
                last = e
                log.warning("retrieval server %s%s: %s (attempt %d/%d)", self.url, path, type(e).__name__,
                            attempt + 1, self.retries + 1)
                continue
            if r.status_code >= 500:
                last = RetrievalServerError(f"{r.status_code}: {r.text[:200]}")
                continue
            if r.status_code >= 400:
                try:
                    msg = r.json().get("error", r.text)
                except ValueError:
                    msg = r.text
                raise RetrievalServerError(f"retrieval server rejected the request ({r.status_code}): {msg}")
            return r.json()
        raise RetrievalServerError(
            f"retrieval server {self.url} failed after {self.retries + 1} attempt(s): {type(last).__name__}: {last}"
        )

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def fingerprint(self) -> dict[str, Any]:
        with self._lock:
            if self._fingerprint is None:
                self._fingerprint = self.health()["fingerprint"]
        return self._fingerprint

    def search(self, query: str, k: int = 3, mode: str | None = None) -> list[Hit]:
        data = self._request("POST", "/search", {"query": query, "k": k, "mode": mode})
        return [Hit(**h) for h in data["hits"]]

    def search_batch(self, queries: list[str], k: int = 3, mode: str | None = None) -> list[list[Hit]]:
        data = self._request("POST", "/search_batch", {"queries": queries, "k": k, "mode": mode})
        return [[Hit(**h) for h in hits] for hits in data["results"]]

    def close(self) -> None:
        self._http.close()
