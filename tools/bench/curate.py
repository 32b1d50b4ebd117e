"""Curation throughput and memory on synthetic runs: score → filter → dedupe → export.

    python tools/bench/curate.py [--n 50000] [--math-share 0.5] [--student embedded:smollm2-135m]
                                 [--near-dup 0.9] [--keep DIR]

Generates `n` synthetic trajectories (3 steps each: two code actions with observations, then
final_answer; a mix of correct, incorrect, duplicate and no-gold ones), the factual ones in run folder
`factual/` and the math ones in `math/` of a temp folder, then runs `agentkd.curate.curate` on both and prints
trajectories/s per phase (each phase's rate = input trajectories / its seconds; score is also given per
domain), in wall-clock time and in CPU time of this process (what a phase costs when other processes share
the cores), and the peak RSS of this process (resource.getrusage). Targets: factual scoring and export
≥ 2,000 trajectories/s, peak RSS ≤ 1 GiB. The length cap uses the student tokenizer (embedded SmolLM2).
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _line(i: int, domain: str, sample: int, template: dict) -> str:
    """One trajectory line: task i (its sample `sample`), correct 2/3 of the time, a few without gold."""
    t = json.loads(json.dumps(template))  # a fresh copy of the template (cheap; no pydantic)
    task = t["task"]
    task["id"] = str(i)
    task["domain"] = domain
    task["source"] = f"synth-{domain}"
    if domain == "math":
        task["question"] = f"What is {i} + {sample % 2}?"
        gold: object = str(i + 1)
        right = str(i + 1)
        wrong = str(i + 2)
    else:
        task["question"] = f"Which city is landmark number {i}?"
        gold = [f"City {i}", f"C{i}"]
        right = f"City {i}"
        wrong = f"Town {i}"
    task["answer"] = None if i % 50 == 0 else gold
    correct = (i + sample) % 3 != 0
    final = right if correct else wrong
    tool = "web_search" if domain == "factual" else "print"
    codes = [f"x = {tool}('{task['question']}')  # look it up\nprint(x)",
             f"y = {i} * {sample % 2 + 1}\nprint(y, x[:20])"]
    for s, code in zip(t["steps"][:2], codes, strict=True):
        s["code"] = code
        s["model_output"] = f"Thought: I do step {s['index']} for task {i}.\nCode:\n```py\n{code}\n```<end_code>"
        s["observation"] = f"result of step {s['index']} for task {i}: {final if s['index'] else 'searching'}"
    fin = t["steps"][2]
    fin["code"] = f"final_answer({final!r})"
    fin["model_output"] = f"Thought: The answer is {final}.\nCode:\n```py\n{fin['code']}\n```<end_code>"
    fin["final_answer"] = final
    t["final_answer"] = final
    t["provenance"]["sample_index"] = sample
    return json.dumps(t, separators=(",", ":")) + "\n"


def generate(root: Path, n: int, math_share: float) -> dict[str, int]:
    from agentkd.core.types import Provenance, Step, Task, Trajectory

    steps = [Step(index=i, model_output="", code="", observation="", cost_usd=0.001, tokens_in=300, tokens_out=40)
             for i in range(3)]
    steps[2].is_final = True
    steps[2].observation = None
    template = Trajectory(task=Task(id="0", question="", answer="", source="synth"),
                          system_prompt="(the teacher's long few-shot prompt) " * 40, user_prompt="Task: ...",
                          steps=steps, status="ok",
                          provenance=Provenance(model="openai/teacher", tools=["web_search", "final_answer"])
                          ).model_dump(mode="json")
    n_math = int(n * math_share)
    sizes = {"factual": n - n_math, "math": n_math}
    for domain, count in sizes.items():
        folder = root / domain
        folder.mkdir(parents=True)
        with open(folder / "trajectories.jsonl", "w") as f:
            for j in range(count):
                # 4 samples per task; samples 0 and 2 of a task share their code actions (exact duplicates)
                f.write(_line(j // 4, domain, j % 4, template))
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--math-share", type=float, default=0.5)
    ap.add_argument("--student", default="embedded:smollm2-135m", help="tokenizer for the length cap ('' for none)")
    ap.add_argument("--near-dup", type=float, default=None, help="near-duplicate threshold (default: off)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    a = ap.parse_args()

    from agentkd.curate import CurateConfig, curate

    with tempfile.TemporaryDirectory(prefix="agentkd-bench-curate-") as tmp:
        root = a.keep or Path(tmp)
        t0 = time.perf_counter()
        sizes = generate(root, a.n, a.math_share)
        gen_s = time.perf_counter() - t0
        runs = [str(root / d) for d, c in sizes.items() if c]
        cfg = CurateConfig(runs=runs, student=a.student or None, near_dup_threshold=a.near_dup)
        t0 = time.perf_counter()
        res = curate(cfg, root / "dataset")
        total = time.perf_counter() - t0
        n = res.trajectories
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        cpu = res.timings["cpu"]
        print(f"generated {n} trajectories ({sizes}) in {gen_s:.1f} s; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        print(f"  {'phase':<16} {'traj/s (wall)':>14} {'traj/s (CPU)':>13}   seconds wall / CPU")
        for i, (domain, count) in enumerate((d, c) for d, c in sizes.items() if c):
            sec = res.timings["score_runs"][i]
            print(f"  score {domain:<10} {count / sec:>14.0f} {'':>13}   {sec:.2f}")
        for phase in ("score", "filter", "dedupe", "export"):
            w, c = res.timings[phase], cpu[phase]
            print(f"  {phase:<16} {n / w if w else float('inf'):>14.0f} {n / c if c else float('inf'):>13.0f}   "
                  f"{w:.2f} / {c:.2f}")
        print(f"  {'setup':<16} {'':>14} {'':>13}   {res.timings['setup']:.2f} / {cpu['setup']:.2f}  (tokenizer load, "
              "imports)")
        print(f"  {'total':<16} {n / total:>14.0f}")
        s = res.card["splits"]
        print(f"  kept: train {s['train']['rows']}, validation {s['validation']['rows']}, rejected "
              f"{s['rejected']['rows']}, pairs {s['pairs/train']['rows']}+{s['pairs/validation']['rows']}; "
              f"filters: {json.dumps({f['name']: f['removed'] for f in res.card['filters']})}")
        print(f"peak RSS {peak:.0f} MiB (target <= 1024)")


if __name__ == "__main__":
    main()
