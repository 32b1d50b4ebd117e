"""BM25 over bm25s: build from passage texts, save/load a folder, search one query in a few milliseconds."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def _stemmer(enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        import Stemmer
    except ImportError:
        from agentkd.core.config import ConfigError

        raise ConfigError("BM25 stemming needs PyStemmer (pip install pystemmer), or set bm25_stemmer: false") from None
    return Stemmer.Stemmer("english")


class BM25Index:
    def __init__(self, retriever: Any, *, stopwords: str | None, stemmer: bool):
        self.retriever = retriever
        self.stopwords = stopwords
        self.stemmer_enabled = stemmer
        self._stemmer = _stemmer(stemmer)
        self.n = int(retriever.scores["num_docs"])

    @classmethod
    def build(cls, texts: list[str], *, k1: float = 1.5, b: float = 0.75, stopwords: str | None = "en",
              stemmer: bool = True) -> BM25Index:
        import bm25s

        tokens = bm25s.tokenize(texts, stopwords=stopwords or [], stemmer=_stemmer(stemmer),
                                show_progress=False)
        retriever = bm25s.BM25(k1=k1, b=b)
        retriever.index(tokens, show_progress=False)
        return cls(retriever, stopwords=stopwords, stemmer=stemmer)

    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        self.retriever.save(str(d), show_progress=False)
        (d / "agentkd_bm25.json").write_text(json.dumps({"stopwords": self.stopwords, "stemmer": self.stemmer_enabled}))

    @classmethod
    def load(cls, directory: str | os.PathLike, *, mmap: bool = True) -> BM25Index:
        import bm25s

        d = Path(directory)
        opts = json.loads((d / "agentkd_bm25.json").read_text())
        retriever = bm25s.BM25.load(str(d), mmap=mmap, show_progress=False)
        return cls(retriever, stopwords=opts["stopwords"], stemmer=opts["stemmer"])

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, scores), best first; rows with score 0 (no query term) are dropped."""
        import bm25s

        k = min(k, self.n)
        tokens = bm25s.tokenize([query], stopwords=self.stopwords or [], stemmer=self._stemmer,
                                return_ids=False, show_progress=False)
        tokens = [[t for t in tokens[0] if t in self.retriever.vocab_dict]]
        if not tokens[0] or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        docs, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        keep = scores[0] > 0
        return docs[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)
