"""The quickstart teacher's yield: how many of its trajectories are correct, and how many actions are well formed.

    python tools/bench/teacher.py [--recipe recipes/quickstart.yaml] [--set collect.samples=2 ...] [--out DIR]

Runs the recipe's `collect` section (default: the quickstart's embedded SmolLM2-135M teacher on the
quickstart-train tasks, with the recipe's prompt, prefill, sampling, samples per task and max_steps) in this
process with the embedded model loaded here (no `agentkd serve`: the same model and requests, without the
HTTP hop), then scores every trajectory with the suite's scorer and prints:

* success rate: correct trajectories / trajectories (what rejection sampling keeps for curation), overall,
  by domain, and how many tasks have at least one correct trajectory;
* well-formed share: steps with a parsed code action that ran without error / steps, with a bootstrap CI
  over tasks (`agentkd.pipeline.summary.action_rate`, the number `agentkd run`'s summary reports);
* statuses (ok = final_answer() called, max_steps), generated tokens, wall time and tokens per second
  (completion tokens / wall time: the whole run, sandboxes and search included), and the load average
  (the machine may be shared: times are pessimistic then).

`--set` takes the recipe overrides `agentkd collect` takes (e.g. --set collect.tasks.limit=8).
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("LITELLM_LOCAL_MODEL_COST_MAP", "True"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/quickstart.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override (repeatable)")
    ap.add_argument("--out", default=None, help="collect folder (default: a temporary one, removed after)")
    ap.add_argument("--show", type=int, default=2, help="print this many trajectories (correct first)")
    a = ap.parse_args()

    from agentkd.collect.runner import collect
    from agentkd.core.config import load_recipe
    from agentkd.core.jsonl import read_models
    from agentkd.core.types import Trajectory
    from agentkd.pipeline.summary import action_rate
    from agentkd.score.base import score_trajectory

    cfg = load_recipe(a.recipe, a.overrides)["collect"]
    cfg.tools.cache = None  # measure the tools, not a cache left by an earlier run
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or os.path.join(tmp, "collect")
        t0 = time.perf_counter()
        summary = collect(cfg, out, progress=False)
        wall = time.perf_counter() - t0
        trajs = list(read_models(os.path.join(out, "trajectories.jsonl"), Trajectory))
        rate = action_rate(Path(out), seed=0, n_resamples=1000)  # the summary's well-formed actions
    load = os.getloadavg()

    correct = {id(t): bool(score_trajectory(t).correct) for t in trajs}
    by_domain: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    solved: set[str] = set()
    for t in trajs:
        by_domain[t.task.domain][0] += correct[id(t)]
        by_domain[t.task.domain][1] += 1
        if correct[id(t)]:
            solved.add(t.task.id)
    with_code = sum(s.code is not None for t in trajs for s in t.steps)
    tokens = sum(s.tokens_out for t in trajs for s in t.steps)
    ok = sum(correct.values())
    n = len(trajs)
    tasks = len({t.task.id for t in trajs})
    print(f"teacher {cfg.teacher.model}  prompt {cfg.agent.prompt}  prefill {cfg.agent.prefill!r}  ftp {cfg.agent.ftp}  "
          f"T={cfg.teacher.sampling.temperature}  max_tokens {cfg.teacher.sampling.max_tokens}  "
          f"max_steps {cfg.agent.max_steps}  samples {cfg.samples}")
    print(f"success rate: {ok}/{n} = {ok / max(n, 1):.2f} correct trajectories; tasks with >=1 correct: "
          f"{len(solved)}/{tasks}; " + ", ".join(f"{d} {c}/{m}" for d, (c, m) in sorted(by_domain.items())))
    print(f"well-formed actions (a parsed code action that ran without error ÷ steps, as agentkd run's summary): "
          f"{rate['good_steps']}/{rate['steps']} = {rate['rate']} {rate['ci95']} (with a code block: {with_code})")
    print(f"statuses: {dict(collections.Counter(t.status for t in trajs))}; infra failures {summary.failed_infra}")
    print(f"wall {wall:.1f} s, {tokens} completion tokens, {tokens / wall:.1f} tokens/s; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    for t in sorted(trajs, key=lambda t: not correct[id(t)])[: a.show]:
        print("-" * 70, f"\n{t.task.question}  gold {t.task.answer!r}  answer {t.final_answer!r}  "
              f"{'correct' if correct[id(t)] else 'wrong'}")
        for s in t.steps:
            print(s.model_output)
            if s.observation:
                print("Observation:", s.observation[:200])


if __name__ == "__main__":
    main()
