"""Benchmark retrieval on the whole embedded corpus (10,033 Wikipedia leads): index build times and
per-query latency p50/p95 for BM25, dense (MiniLM + faiss, query encoding included) and hybrid (RRF).

    python tools/bench/retrieval.py [--out DIR] [--n 300] [--faiss flat|hnsw|ivf] [--json out.json]

One hybrid index is built into --out (default $AGENTKD_CACHE/bench/wiki-vital, else
~/.cache/agentkd/bench/wiki-vital); its BM25 part and dense part are timed separately. Dense embeddings stay on
disk there, so a second run reuses them and only rebuilds faiss (the first run's encoding time is kept in
bench_encode.json and printed). Also prints gold-in-top-3 rates of the hand-written questions in
tests/data/retrieval_questions.json, now over the full corpus (tests/test_retrieval.py checks those rates on
this same cached folder when it exists).

Then, side by side on the tests' 305-passage slice: a fresh dense build (encoding) and the rebuilds of its folder
as hnsw and ivf that reuse the embeddings on disk (only faiss is rebuilt), with the ratio of their times.
Targets (issue 4), on 2 CPU cores: BM25 p50 <= 5 ms, dense p50 <= 15 ms including query encoding.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

TARGET_P50_MS = {"bm25": 5.0, "dense": 15.0}
REPO = Path(__file__).resolve().parents[2]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def queries(n: int, titles: list[str]) -> list[str]:
    """`n` distinct, deterministic queries: the hand-written test questions, then question templates over
    random corpus titles."""
    qs = [q["q"] for q in json.loads((REPO / "tests" / "data" / "retrieval_questions.json").read_text())["questions"]]
    rng = random.Random(0)
    templates = ["What is {}?", "Tell me about {}", "history of {}", "where is {} located", "who founded {}"]
    while len(qs) < n:
        qs.append(rng.choice(templates).format(rng.choice(titles)))
    return qs[:n]


def reuse_vs_fresh(passages: list, stride: int = 33, chunk_size: int = 64) -> dict:
    """Seconds of a fresh dense build of `passages[::stride]`, and of rebuilding that folder as hnsw / ivf
    from its embeddings (both include loading the encoder, as every build does)."""
    import shutil
    import tempfile

    from agentkd.tools.config import IndexConfig
    from agentkd.tools.retrieval.build import build_index

    part = passages[::stride]
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / "flat"
        t0 = time.perf_counter()
        build_index(IndexConfig(kind="dense", chunk_size=chunk_size), flat, passages=part)
        fresh = time.perf_counter() - t0
        out: dict = {"passages": len(part), "fresh_s": round(fresh, 3), "rebuild": {}}
        for kind in ("hnsw", "ivf"):
            folder = Path(tmp) / kind
            shutil.copytree(flat, folder)
            t0 = time.perf_counter()
            meta = build_index(IndexConfig(kind="dense", chunk_size=chunk_size, faiss=kind), folder, passages=part)
            took = time.perf_counter() - t0
            d = meta["dense"]
            out["rebuild"][kind] = {"s": round(took, 3), "fresh_over_rebuild": round(fresh / took, 1),
                                    "chunks_reused": f"{d['chunks_reused']}/{d['chunks']}"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(os.environ.get("AGENTKD_CACHE") or Path.home() / ".cache" / "agentkd")
    ap.add_argument("--out", type=Path, default=root / "bench" / "wiki-vital", help="Index folder (kept between runs).")
    ap.add_argument("--n", type=int, default=300, help="Timed queries per mode.")
    ap.add_argument("--faiss", default="flat", choices=["flat", "hnsw", "ivf"])
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    ap.add_argument("--no-reuse-check", action="store_true", help="Skip the fresh-vs-reused build comparison.")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table

    from agentkd.tools.config import IndexConfig
    from agentkd.tools.retrieval.build import build_index, load_index
    from agentkd.tools.retrieval.corpus import load_corpus

    console = Console()
    import torch

    console.print(f"torch threads: {torch.get_num_threads()} (query encoding: 1), cpus: {os.cpu_count()}, "
                  f"load average before: {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    passages = load_corpus("embedded:wiki-vital")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    meta = build_index(IndexConfig(corpus="embedded:wiki-vital", kind="hybrid", faiss=args.faiss), args.out,
                       passages=passages, show_progress=True)
    total_s = time.perf_counter() - t0
    dense = meta["dense"]
    enc_file = args.out / "bench_encode.json"
    reused = dense["chunks_reused"] == dense["chunks"]
    if not reused:
        enc_file.write_text(json.dumps({"encode_s": dense["encode_s"], "count": meta["count"]}))
    first_encode = json.loads(enc_file.read_text())["encode_s"] if enc_file.exists() else None

    t0 = time.perf_counter()
    index = load_index(args.out)
    open_s = time.perf_counter() - t0
    qs = queries(args.n, [p.title for p in passages])
    results: dict = {"count": meta["count"], "corpus_load_s": round(load_s, 3), "build_total_s": round(total_s, 3),
                     "bm25_build_s": meta["bm25"]["build_s"], "dense_encode_s_this_run": dense["encode_s"],
                     "dense_encode_s_first_run": first_encode, "embeddings_reused": reused,
                     "faiss": dense["faiss"], "faiss_build_s": dense["faiss_s"], "index_open_s": round(open_s, 3),
                     "torch_threads": torch.get_num_threads(), "modes": {}}
    gold = json.loads((REPO / "tests" / "data" / "retrieval_questions.json").read_text())["questions"]
    modes = ("bm25", "dense", "hybrid")
    for q in qs[:10]:  # warm-up
        for mode in modes:
            index.search(q, 3, mode)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for q in qs:  # modes interleaved, so load from other processes hits them alike
        for mode in modes:
            t = time.perf_counter()
            index.search(q, 3, mode)
            times[mode].append((time.perf_counter() - t) * 1000)
    for mode in modes:
        top3 = sum(g["gold"] in [h.id for h in index.search(g["q"], 3, mode)] for g in gold) / len(gold)
        ts = times[mode]
        results["modes"][mode] = {"p50_ms": round(pct(ts, 50), 3), "p95_ms": round(pct(ts, 95), 3),
                                  "mean_ms": round(statistics.fmean(ts), 3), "gold_top3": round(top3, 3)}
    load = os.getloadavg()[0]
    results["loadavg_1m"] = round(load, 2)

    console.print(f"corpus: {meta['count']} passages (load {load_s:.2f} s); index folder {args.out}")
    console.print(f"build: bm25 {meta['bm25']['build_s']:.2f} s; dense encode "
                  + (f"reused cached embeddings (first run encoded in {first_encode} s)" if reused
                     else f"{dense['encode_s']:.1f} s ({meta['count'] / max(dense['encode_s'], 1e-9):.0f} passages/s)")
                  + f"; faiss {dense['faiss']['type']} {dense['faiss_s']:.2f} s; total {total_s:.1f} s")
    table = Table(title=f"query latency over {len(qs)} queries (k=3); load average after: {load:.2f}")
    for col in ("mode", "p50 ms", "p95 ms", "mean ms", "target p50", "met", "gold@3 (30 q)"):
        table.add_column(col)
    for mode, r in results["modes"].items():
        target = TARGET_P50_MS.get(mode)
        met = "-" if target is None else ("yes" if r["p50_ms"] <= target else "NO")
        table.add_row(mode, f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['mean_ms']:.2f}",
                      "-" if target is None else f"<= {target:g}", met, f"{r['gold_top3']:.0%}")
    console.print(table)
    if not args.no_reuse_check:
        r = results["reuse_vs_fresh"] = reuse_vs_fresh(passages)
        console.print(f"{r['passages']}-passage slice: fresh dense build {r['fresh_s']:.2f} s; rebuilt from its "
                      "embeddings: " + "; ".join(f"{k} {v['s']:.2f} s (fresh/rebuild {v['fresh_over_rebuild']:.0f}x, chunks "
                                                  f"reused {v['chunks_reused']})" for k, v in r["rebuild"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
