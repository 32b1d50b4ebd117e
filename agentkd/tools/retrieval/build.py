"""Build an index folder from a corpus, and load one for searching.

Layout of an index folder:

    meta.json                  kind, corpus spec + sha256, passage count, encoder, dimension, faiss params, timings
    passages.jsonl (+ .offsets.npy)  the passages, read by row
    bm25/                      bm25s files                                (kind bm25 or hybrid)
    dense/chunks/              embeddings of each chunk of `chunk_size` passages while building
    dense/embeddings.npy       all embeddings, float32 (n, d), memory-mapped when read
    dense/index.faiss          the faiss index                            (kind dense or hybrid)

Dense builds write each chunk's embeddings atomically (tmp + rename) under a manifest keyed by the encoder,
the corpus sha256 and the chunk size, so a killed build resumes at the first missing chunk and ends with the
same index. Rebuilding a folder whose embeddings match reuses them (only faiss is rebuilt).

An existing faiss index (say e5 over wiki-18) is plugged in with `IndexConfig.faiss_file` (CLI `--faiss-file`):
its rows must be the corpus passages in order; nothing is encoded and meta.json points at the file.

Test hook: with `AGENTKD_INDEX_PAUSE_AFTER_CHUNKS=N` in the environment the build stops (sleeps for an hour)
right after writing its N-th new chunk, so a test can SIGKILL it at a known point between chunks.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from agentkd.core.config import ConfigError
from agentkd.core.hashing import stable_hash
from agentkd.tools.config import EncoderConfig, IndexConfig
from agentkd.tools.retrieval.corpus import corpus_sha256, load_corpus, passage_text
from agentkd.tools.retrieval.types import Hit, Passage

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
PAUSE_ENV = "AGENTKD_INDEX_PAUSE_AFTER_CHUNKS"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def _progress(enabled: bool) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def encode_chunked(passages: list[Passage], encoder: Any, directory: Path, *, chunk_size: int, key: str,
                   show_progress: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """Embeddings of all passages, resumably: chunk files under `directory/chunks`, concatenated into a
    memory-mapped `directory/embeddings.npy`. Returns (embeddings, {"chunks", "chunks_reused"})."""
    chunks_dir = directory / "chunks"
    final = directory / "embeddings.npy"
    final_key = directory / "embeddings.json"
    if final.exists() and final_key.exists() and json.loads(final_key.read_text()).get("key") == key:
        emb = np.load(final, mmap_mode="r")
        if emb.shape == (len(passages), encoder.dim):
            log.info("reusing embeddings in %s", final)
            n_chunks = -(-len(passages) // chunk_size)
            return emb, {"chunks": n_chunks, "chunks_reused": n_chunks}
    manifest = chunks_dir / "manifest.json"
    if chunks_dir.exists() and (not manifest.exists() or json.loads(manifest.read_text()).get("key") != key):
        log.info("discarding stale embedding chunks in %s", chunks_dir)
        shutil.rmtree(chunks_dir)
    chunks_dir.mkdir(parents=True, exist_ok=True)
    _write_json(manifest, {"key": key, "chunk_size": chunk_size, "count": len(passages)})

    pause_after = int(os.environ.get(PAUSE_ENV, "0") or 0)
    n_chunks = -(-len(passages) // chunk_size)
    reused = written = 0
    with _progress(show_progress) as progress:
        task = progress.add_task("embedding passages", total=len(passages)) if progress else None
        for c in range(n_chunks):
            lo, hi = c * chunk_size, min(len(passages), (c + 1) * chunk_size)
            path = chunks_dir / f"chunk_{c:06d}.npy"
            if path.exists():
                try:
                    ok = np.load(path, mmap_mode="r").shape == (hi - lo, encoder.dim)
                except (ValueError, OSError):
                    ok = False
                if ok:
                    reused += 1
                    if progress:
                        progress.advance(task, hi - lo)
                    continue
            emb = encoder.encode_passages([passage_text(p) for p in passages[lo:hi]])
            tmp = path.with_name(path.stem + ".tmp.npy")
            np.save(tmp, emb)
            os.replace(tmp, path)
            written += 1
            if progress:
                progress.advance(task, hi - lo)
            if pause_after and written >= pause_after:
                log.warning("%s=%d: pausing after %d chunk(s) (test hook)", PAUSE_ENV, pause_after, written)
                time.sleep(3600)
    if reused:
        log.info("resumed: %d of %d embedding chunks were already on disk", reused, n_chunks)
    out = np.lib.format.open_memmap(final.with_name("embeddings.tmp.npy"), mode="w+", dtype=np.float32,
                                    shape=(len(passages), encoder.dim))
    for c in range(n_chunks):
        lo = c * chunk_size
        part = np.load(chunks_dir / f"chunk_{c:06d}.npy")
        out[lo : lo + len(part)] = part
    out.flush()
    del out
    os.replace(final.with_name("embeddings.tmp.npy"), final)
    _write_json(final_key, {"key": key})
    shutil.rmtree(chunks_dir)
    return np.load(final, mmap_mode="r"), {"chunks": n_chunks, "chunks_reused": reused}


def _build_dense(config: IndexConfig, passages: list[Passage], sha: str, out: Path, show_progress: bool) -> dict:
    from agentkd.tools.retrieval.dense import build_faiss, import_faiss
    from agentkd.tools.retrieval.encoder import Encoder

    faiss = import_faiss()
    t0 = time.perf_counter()
    encoder = Encoder(config.encoder)
    fp = encoder.fingerprint()
    common = {"encoder": fp, "encoder_config": config.encoder.model_dump(mode="json"), "dim": encoder.dim}
    if config.faiss_file:  # plug in an existing index (e.g. e5 over wiki-18): no encoding
        path = Path(config.faiss_file).resolve()
        if not path.is_file():
            raise ConfigError(f"faiss index {path} not found", path="index.faiss_file")
        index = faiss.read_index(str(path))
        if index.ntotal != len(passages) or index.d != encoder.dim:
            raise ConfigError(f"faiss index {path} holds {index.ntotal} vectors of dimension {index.d}; the corpus "
                              f"has {len(passages)} passages and the encoder dimension {encoder.dim}",
                              path="index.faiss_file")
        return common | {"faiss": {"type": "external", "class": type(index).__name__}, "faiss_path": str(path),
                         "embeddings": None, "encode_s": 0.0, "faiss_s": 0.0, "chunks": 0, "chunks_reused": 0}
    key = stable_hash({"encoder": fp, "corpus": sha, "chunk_size": config.chunk_size,
                       "batch_size": config.encoder.batch_size}, length=32)
    emb, stats = encode_chunked(passages, encoder, out / "dense", chunk_size=config.chunk_size, key=key,
                                show_progress=show_progress)
    t1 = time.perf_counter()
    index, params = build_faiss(np.asarray(emb), config.faiss, hnsw_m=config.hnsw_m,
                                ef_construction=config.hnsw_ef_construction, ef_search=config.hnsw_ef_search,
                                ivf_nlist=config.ivf_nlist, ivf_nprobe=config.ivf_nprobe)
    faiss.write_index(index, str(out / "dense" / "index.faiss.tmp"))
    os.replace(out / "dense" / "index.faiss.tmp", out / "dense" / "index.faiss")
    return common | {"faiss": params, "faiss_path": "dense/index.faiss", "embeddings": "dense/embeddings.npy",
                     "encode_s": round(t1 - t0, 3), "faiss_s": round(time.perf_counter() - t1, 3), **stats}


def build_index(config: IndexConfig, out: str | os.PathLike, *, passages: list[Passage] | None = None,
                show_progress: bool = False) -> dict[str, Any]:
    """Build `config.kind` over `config.corpus` (or the given `passages`) into folder `out`; returns the metadata."""
    out = Path(out)
    if config.faiss_file and config.kind == "bm25":
        raise ConfigError("faiss_file needs kind dense or hybrid", path="index.faiss_file")
    if passages is None:
        if not config.corpus:
            raise ConfigError("no corpus given", path="index.corpus")
        passages = load_corpus(config.corpus, config.limit)
    if not passages:
        raise ConfigError(f"corpus {config.corpus!r} has no passages")
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # an index without meta.json is incomplete
    sha = corpus_sha256(passages)
    from agentkd.tools.retrieval.store import write_store

    write_store(passages, out)
    meta: dict[str, Any] = {"format": FORMAT_VERSION, "kind": config.kind, "corpus": config.corpus,
                            "corpus_sha256": sha, "count": len(passages), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                            time.gmtime()), "bm25": None, "dense": None}
    if config.kind in ("bm25", "hybrid"):
        from agentkd.tools.retrieval.bm25 import BM25Index

        t0 = time.perf_counter()
        texts = [passage_text(p) for p in passages]
        bm25 = BM25Index.build(texts, k1=config.bm25_k1, b=config.bm25_b, stopwords=config.bm25_stopwords,
                               stemmer=config.bm25_stemmer)
        if (out / "bm25").exists():
            shutil.rmtree(out / "bm25")
        bm25.save(out / "bm25")
        meta["bm25"] = {"k1": config.bm25_k1, "b": config.bm25_b, "stopwords": config.bm25_stopwords,
                        "stemmer": config.bm25_stemmer, "build_s": round(time.perf_counter() - t0, 3)}
    if config.kind in ("dense", "hybrid"):
        meta["dense"] = _build_dense(config, passages, sha, out, show_progress)
    _write_json(out / "meta.json", meta)
    return meta


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / "meta.json"
    if not path.exists():
        raise ConfigError(f"{directory} is not a finished index (no meta.json); build it with `agentkd index build`")
    return json.loads(path.read_text())


class LocalIndex:
    """A loaded index folder: `search(query, k, mode)` with mode bm25, dense, hybrid or None (the index's kind)."""

    def __init__(self, directory: str | os.PathLike, *, rrf_k: int = 60, encoder: Any = None):
        from agentkd.tools.retrieval.store import PassageStore

        self.directory = Path(directory)
        self.meta = read_meta(directory)
        self.kind = self.meta["kind"]
        self.rrf_k = rrf_k
        self.passages = PassageStore(self.directory)
        self.bm25 = self.dense = None
        if self.meta.get("bm25"):
            from agentkd.tools.retrieval.bm25 import BM25Index

            self.bm25 = BM25Index.load(self.directory / "bm25")
        if self.meta.get("dense"):
            from agentkd.tools.retrieval.dense import DenseIndex
            from agentkd.tools.retrieval.encoder import Encoder

            d = self.meta["dense"]
            encoder = encoder or Encoder(EncoderConfig.model_validate(d["encoder_config"]))
            self.dense = DenseIndex.load(self.directory / d["faiss_path"], encoder, d["faiss"])

    def fingerprint(self) -> dict[str, Any]:
        dense = self.meta.get("dense") or {}
        return {"kind": self.kind, "corpus_sha256": self.meta["corpus_sha256"], "bm25": self.meta.get("bm25") and
                {k: v for k, v in self.meta["bm25"].items() if k != "build_s"},
                "encoder": dense.get("encoder"), "faiss": dense.get("faiss"), "rrf_k": self.rrf_k}

    def search_rows(self, query: str, k: int, mode: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        mode = self.kind if mode in (None, "auto") else mode
        if mode == "bm25":
            if self.bm25 is None:
                raise ConfigError(f"index {self.directory} has no BM25 part (kind {self.kind})")
            return self.bm25.search(query, k)
        if mode == "dense":
            if self.dense is None:
                raise ConfigError(f"index {self.directory} has no dense part (kind {self.kind})")
            return self.dense.search(query, k)
        if mode == "hybrid":
            if self.bm25 is None or self.dense is None:
                raise ConfigError(f"hybrid search needs a hybrid index; {self.directory} is {self.kind}")
            from agentkd.tools.retrieval.hybrid import candidates, rrf

            n = candidates(k)
            return rrf([self.bm25.search(query, n)[0], self.dense.search(query, n)[0]], k, self.rrf_k)
        raise ConfigError(f"unknown search mode {mode!r} (bm25, dense, hybrid)")

    def search(self, query: str, k: int = 3, mode: str | None = None) -> list[Hit]:
        rows, scores = self.search_rows(query, k, mode)
        hits = []
        for rank, (row, score) in enumerate(zip(rows.tolist(), scores.tolist(), strict=True), start=1):
            p = self.passages[row]
            hits.append(Hit(rank=rank, score=float(score), id=p.id, title=p.title, text=p.text))
        return hits


def load_index(directory: str | os.PathLike, **kwargs: Any) -> LocalIndex:
    return LocalIndex(directory, **kwargs)
