"""Factual scoring throughput and memory: `score_run` over a synthetic run folder.

    python tools/bench/score.py [--trajectories 50000] [--steps 4]

Writes N factual trajectories of realistic size (system prompt, a few CodeAct steps with observations,
gold aliases) into a temporary run folder, then times `score_run` on it (target: >= 2,000 trajectories/s,
<= 1 GiB peak RSS, streaming) and times a rerun (which scores nothing new).
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_run(path: Path, n: int, steps: int) -> int:
    from agentkd.core.jsonl import JsonlStore
    from agentkd.core.types import Provenance, Step, Task, Trajectory

    rng = random.Random(0)
    words = ["the", "of", "river", "city", "born", "film", "album", "director", "played", "president", "capital", "football", "war"]
    system = "You are an expert assistant who can solve any task using code blobs. " * 40
    with JsonlStore(path / "trajectories.jsonl", durable=False) as store:
        for i in range(n):
            gold = " ".join(rng.choice(words).title() for _ in range(2))
            pred = gold if rng.random() < 0.5 else f"the {gold.lower()} of {rng.choice(words)}"
            traj = Trajectory(
                task=Task(id=str(i), question=f"Which {rng.choice(words)} is question {i}?", answer=[gold, gold.upper()],
                          source="hotpotqa"),
                system_prompt=system, user_prompt=f"New task: question {i}",
                steps=[Step(index=s, model_output="Thought: search.\nCode:\n```py\nprint(search('x'))\n```" * 3,
                            code="print(search('x'))", observation="Doc: " + " ".join(rng.choices(words, k=250)),
                            tokens_in=900, tokens_out=80) for s in range(steps)],
                final_answer=pred, status="ok", provenance=Provenance(model="openai/gpt-4o", sample_index=0))
            store.append(traj)
    return (path / "trajectories.jsonl").stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trajectories", type=int, default=50_000)
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    from agentkd.score.run import score_run

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        size = write_run(run, a.trajectories, a.steps)
        print(f"wrote {a.trajectories} trajectories, {size / 2**20:.0f} MiB; peak RSS so far {peak_rss_mb():.0f} MiB")
        t0 = time.perf_counter()
        s = score_run(run, progress=False)
        dt = time.perf_counter() - t0
        print(f"score_run: {s.scored_new} scored in {dt:.2f} s = {s.scored_new / dt:,.0f} trajectories/s; "
              f"peak RSS {peak_rss_mb():.0f} MiB; em {s.metrics['em']['mean']:.3f}")
        t0 = time.perf_counter()
        s = score_run(run, progress=False)
        print(f"rerun: {s.scored_new} new, {s.already_scored} already scored, {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
