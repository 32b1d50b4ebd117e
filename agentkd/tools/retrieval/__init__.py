"""Retrieval: corpora, BM25 (bm25s), dense (faiss) and hybrid (RRF) indexes, a server and its client."""

from agentkd.tools.retrieval.types import Hit, Passage

__all__ = ["Hit", "Passage"]
