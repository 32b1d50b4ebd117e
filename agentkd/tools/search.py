"""The retrieval tool (`web_search(query) -> str` by default): top-k passages as readable text.

The retriever is opened on first call (thread-safe): a retrieval server when `url` is set, else an index
folder, else a corpus spec, for which a BM25 index is built once into `cache_dir` and reused.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from agentkd.core.hashing import stable_hash
from agentkd.tools.base import Tool, ToolError
from agentkd.tools.config import IndexConfig, SearchToolConfig
from agentkd.tools.retrieval.types import Hit


def default_cache_dir() -> Path:
    root = os.environ.get("AGENTKD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agentkd")
    return Path(root) / "indexes"


def format_hits(hits: list[Hit], max_chars: int | None = None) -> str:
    """Readable passages: `[rank] title (score s)` then the text, separated by blank lines."""
    if not hits:
        return "No results found."
    blocks = []
    for h in hits:
        text = h.text if max_chars is None or len(h.text) <= max_chars else h.text[: max_chars - 3].rstrip() + "..."
        blocks.append(f"[{h.rank}] {h.title} (score {h.score:.4f})\n{text}")
    return "\n\n".join(blocks)


def check_source(config: SearchToolConfig) -> None:
    """Fail at tool-building time (not at the agent's first search) when the index or corpus is missing."""
    from agentkd.core.config import ConfigError

    if config.url or config.index is None or config.index.startswith(("embedded:", "hf:")):
        if not config.url and config.index is None:
            raise ConfigError("set search.index (an index folder or corpus) or search.url", path="tools.search")
        return
    path = Path(config.index)
    if not path.exists():
        raise ConfigError(f"{path} not found (an index folder, a JSONL corpus or a dataset folder)",
                          path="tools.search.index")
    if path.is_dir() and not any((path / f).exists() for f in ("meta.json", "dataset_info.json", "state.json",
                                                                 "dataset_dict.json")):
        raise ConfigError(f"{path} is not a finished index (no meta.json) nor a saved dataset",
                          path="tools.search.index")


def open_retriever(config: SearchToolConfig) -> Any:
    if config.url:
        from agentkd.tools.retrieval.client import RetrievalClient

        return RetrievalClient(config.url, timeout_s=config.timeout_s, retries=config.retries)
    from agentkd.tools.retrieval.build import build_index, load_index

    if config.index is None:
        raise ToolError("the search tool has neither an index nor a server url")
    path = Path(config.index)
    if (path / "meta.json").exists():
        return load_index(path, rrf_k=config.rrf_k)
    # a corpus spec: build a BM25 index once, keyed by the spec (and the file's size/mtime for files)
    key: dict[str, Any] = {"corpus": config.index}
    if path.is_file():
        st = path.stat()
        key |= {"size": st.st_size, "mtime": st.st_mtime_ns}
    out = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    out = out / f"bm25-{stable_hash(key)}"
    if not (out / "meta.json").exists():
        import fcntl

        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{out.name}.lock", "w") as lock:  # collection workers may start together
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / "meta.json").exists():
                build_index(IndexConfig(corpus=config.index, kind="bm25"), out)
    return load_index(out, rrf_k=config.rrf_k)


class SearchTool(Tool):
    inputs = {"query": {"type": "string", "description": "The search query: keywords or a question."}}
    output_type = "string"

    def __init__(self, config: SearchToolConfig | None = None, retriever: Any = None):
        self.config = config = config or SearchToolConfig()
        self.name = config.name  # type: ignore[misc]
        self.description = config.description  # type: ignore[misc]
        super().__init__()
        if retriever is None:
            check_source(config)
        self._retriever = retriever
        self._lock = threading.Lock()
        self._hash: str | None = None

    @property
    def retriever(self) -> Any:
        if self._retriever is None:
            with self._lock:
                if self._retriever is None:
                    self._retriever = open_retriever(self.config)
        return self._retriever

    def config_hash(self) -> str:
        if self._hash is None:
            c = self.config
            self._hash = stable_hash({"k": c.k, "mode": c.mode, "max_chars": c.max_chars, "rrf_k": c.rrf_k,
                                      "index": self.retriever.fingerprint()})
        return self._hash

    def search(self, query: str) -> list[Hit]:
        if not query.strip():
            raise ToolError(f"{self.name}(): query must not be empty")
        mode = None if self.config.mode == "auto" else self.config.mode
        return self.retriever.search(query, self.config.k, mode)

    def forward(self, query: str) -> str:  # type: ignore[override]
        return format_hits(self.search(query), self.config.max_chars)
