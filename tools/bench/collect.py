"""Collection throughput against a stand-in teacher with fixed latency.

    python tools/bench/collect.py [--episodes 64] [--latency 0.3] [--concurrency 64] [--steps 3]
                                  [--isolation container,process]

Each episode makes `steps` teacher calls (steps-1 code actions, then final_answer), each code action runs
in the episode's real sandbox. Ideal throughput = concurrency / latency calls per second; prints
achieved ÷ ideal (target ≥ 0.9) for each `sandbox.episode_isolation` mode (container: a new sandbox per
episode; process: episodes forked from a warm template, see agentkd.sandbox), and peak memory of this
process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="teacher calls per episode")
    ap.add_argument("--backend", default="auto", help="sandbox backend")
    ap.add_argument("--isolation", default="container,process",
                    help="comma-separated sandbox.episode_isolation modes to measure, in this order")
    a = ap.parse_args()
    for mode in a.isolation.split(","):
        run_one(a, mode.strip())


def run_one(a: argparse.Namespace, mode: str) -> None:
    from agentkd.collect import CollectConfig, collect
    from agentkd.models.standin import StandinServer

    with tempfile.TemporaryDirectory() as tmp, StandinServer(latency_s=a.latency, actions=a.steps - 1) as srv:
        tasks = Path(tmp) / "tasks.json"
        tasks.write_text(json.dumps({"examples": [{"id": i, "question": f"Bench question {i}?", "answer": "x"}
                                                  for i in range(a.episodes)]}))
        cfg = CollectConfig.model_validate({
            "tasks": {"path": str(tasks)},
            "teacher": {"model": "openai/standin", "api_base": srv.url},
            "client": {"max_concurrency": a.concurrency},
            "agent": {"prompt": "codeact_student", "max_steps": a.steps},
            "tools": {"search": None},
            "sandbox": {"backend": a.backend, "episode_isolation": mode},
            "concurrency": a.concurrency,
        })
        # warm-up: one episode pays the one-time imports (litellm, sandbox) outside the timed run
        collect(cfg.model_copy(update={"tasks": cfg.tasks.model_copy(update={"limit": 1})}), Path(tmp) / "warm",
                progress=False)
        srv.requests.clear()
        t0 = time.perf_counter()
        summary = collect(cfg, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - t0
        calls = len(srv.requests)
    ok = summary["statuses"].get("ok", 0)
    ideal = a.concurrency / a.latency
    # the first call of every episode cannot start before the run does, so the best possible wall time is
    # ceil(episodes / concurrency) * steps * latency
    achieved = calls / wall
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"episodes={a.episodes} ok={ok} steps={a.steps} calls={calls} latency={a.latency}s "
          f"concurrency={a.concurrency} sandbox={a.backend} episode_isolation={mode}")
    print(f"wall={wall:.2f}s  achieved={achieved:.1f} calls/s  ideal={ideal:.1f} calls/s")
    print(f"[{mode}] throughput ratio (achieved / ideal) = {achieved / ideal:.3f}   target >= 0.9")
    print(f"peak RSS (this process) = {peak_mb:.0f} MiB")
    if ok != a.episodes:
        print("warning: not every episode finished ok", file=sys.stderr)


if __name__ == "__main__":
    main()
