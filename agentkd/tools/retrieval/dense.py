"""Dense retrieval with faiss over L2-normalised embeddings (inner product): Flat, HNSW or IVF."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np


def import_faiss() -> Any:
    """`import faiss`, without its loader's INFO lines about which CPU build it picked."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def build_faiss(emb: np.ndarray, kind: str = "flat", *, hnsw_m: int = 32, ef_construction: int = 200,
                ef_search: int = 128, ivf_nlist: int | None = None, ivf_nprobe: int = 16) -> tuple[Any, dict]:
    """A faiss index over `emb` (n, d) float32, and the parameters used (for the index metadata)."""
    faiss = import_faiss()

    n, d = emb.shape
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    params: dict[str, Any] = {"type": kind}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        params |= {"m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
    elif kind == "ivf":
        nlist = ivf_nlist or max(1, min(int(4 * n**0.5), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(emb)
        index.nprobe = min(ivf_nprobe, nlist)
        params |= {"nlist": nlist, "nprobe": index.nprobe}
    else:
        raise ValueError(f"unknown faiss index type {kind!r} (flat, hnsw, ivf)")
    index.add(emb)
    return index, params


class DenseIndex:
    """A faiss index plus the encoder for its queries. One query is searched on one OpenMP thread: for a single
    vector faiss's thread pool costs more than it saves (flat over 10k passages: ~0.6 ms on 1 thread, 1-11 ms
    on 2), and OpenMP's thread count is per calling thread, so this does not slow index builds elsewhere."""

    def __init__(self, index: Any, encoder: Any, search_threads: int | None = 1):
        self.index = index
        self.encoder = encoder
        self.search_threads = search_threads

    @classmethod
    def load(cls, faiss_path: str | os.PathLike, encoder: Any, params: dict[str, Any] | None = None) -> DenseIndex:
        index = import_faiss().read_index(str(faiss_path))
        params = params or {}
        if "ef_search" in params and hasattr(index, "hnsw"):
            index.hnsw.efSearch = params["ef_search"]
        if "nprobe" in params and hasattr(index, "nprobe"):
            index.nprobe = params["nprobe"]
        return cls(index, encoder)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = self.encoder.encode_queries([query])
        if self.search_threads:
            faiss = import_faiss()
            old = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(self.search_threads)
            try:
                scores, rows = self.index.search(q, min(k, self.index.ntotal))
            finally:
                faiss.omp_set_num_threads(old)
        else:
            scores, rows = self.index.search(q, min(k, self.index.ntotal))
        keep = rows[0] >= 0
        return rows[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)
