"""JSONL store: append and streaming-read throughput, and peak memory of the read.

    python tools/bench/jsonl.py [--lines 100000]

Writes N trajectory-sized records through `JsonlStore` (one write() per line), then streams them back
with `iter_jsonl`, printing lines/s for both and the resident-memory growth of the read (a streaming
reader stays flat however long the file is).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    a = ap.parse_args()
    from agentkd.core.jsonl import JsonlStore, iter_jsonl

    record = {"task": {"id": "x", "question": "q" * 200}, "steps": [{"model_output": "o" * 800}] * 3,
              "provenance": {"model": "m", "sampling": {"temperature": 0.7}}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        t0 = time.perf_counter()
        with JsonlStore(path, durable=False) as store:
            for i in range(a.lines):
                store.append({**record, "i": i})
        write_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        before = rss_mb()
        t0 = time.perf_counter()
        n = sum(1 for _ in iter_jsonl(path))
        read_s = time.perf_counter() - t0
        grown = rss_mb() - before
    assert n == a.lines
    print(f"lines={a.lines} file={size_mb:.0f} MiB")
    print(f"append: {a.lines / write_s:,.0f} lines/s ({write_s:.2f} s)")
    print(f"stream read: {a.lines / read_s:,.0f} lines/s ({read_s:.2f} s, {size_mb / read_s:.0f} MiB/s)")
    print(f"RSS growth during read: {grown:.1f} MiB (file is {size_mb:.0f} MiB; ratio {grown / size_mb:.3f})")


if __name__ == "__main__":
    main()
