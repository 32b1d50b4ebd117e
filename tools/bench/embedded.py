"""Embedded model preparation: a first conversion (GGUF -> HF folder) next to a call on the prepared folder.

    python tools/bench/embedded.py [--name smollm2-135m] [--repeat 20]

The conversion runs into a temporary AGENTKD_CACHE (the real cache is left alone); then `prepare_embedded`
is called `--repeat` times on that prepared folder. Prints both times and their ratio: a prepared model
should come back in a few milliseconds, thousands of times faster than converting it (tests/test_models_api.py
checks that it loads and rewrites nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="smollm2-135m")
    ap.add_argument("--repeat", type=int, default=20, help="Calls timed on the prepared folder.")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AGENTKD_CACHE"] = tmp  # read at each call: the conversion goes here
        from agentkd.models.embedded import prepare_embedded

        t0 = time.perf_counter()
        first = prepare_embedded(args.name, progress=False)
        convert_s = time.perf_counter() - t0
        again = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            assert prepare_embedded(args.name, progress=False) == first
            again.append(time.perf_counter() - t0)
    cached_s = statistics.median(again)
    print(f"embedded:{args.name}: first conversion {convert_s:.2f} s; prepared, median of {args.repeat} calls "
          f"{cached_s * 1000:.2f} ms (max {max(again) * 1000:.2f} ms); conversion/prepared = "
          f"{convert_s / cached_s:,.0f}x; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
