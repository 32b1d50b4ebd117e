"""From scored trajectories to the numbers of a report: accuracy, seeded bootstrap CIs, seeds, SAG votes.

The 95% CI of a benchmark is `scipy.stats.bootstrap` over its tasks: each task's score is its mean over the
seeds that scored it (unscorable and missing episodes left out), the statistic is the mean, `method`
percentile, `n_resamples` and `rng=numpy.random.default_rng(seed)` as recorded in results.json and the
manifest. Anyone can recompute an interval from `per_task` with `bootstrap_ci` or with the scipy call it
documents.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CI_METHOD = "percentile"
CONFIDENCE = 0.95


def bootstrap_ci(values: Sequence[float], *, seed: int, n_resamples: int) -> list[float] | None:
    """The seeded 95% bootstrap interval of the mean of `values`:
    `scipy.stats.bootstrap((values,), numpy.mean, n_resamples=n_resamples, confidence_level=0.95,
    method="percentile", rng=numpy.random.default_rng(seed))`. None for fewer than two values; the value
    itself, twice, when they are all equal (no spread to resample)."""
    if len(values) < 2:
        return None
    if len(set(values)) == 1:
        return [float(values[0])] * 2
    import numpy as np
    from scipy.stats import bootstrap

    res = bootstrap((np.asarray(values, dtype=float),), np.mean, n_resamples=n_resamples,
                    confidence_level=CONFIDENCE, method=CI_METHOD, rng=np.random.default_rng(seed))
    return [round(float(res.confidence_interval.low), 6), round(float(res.confidence_interval.high), 6)]


def task_means(per_task: Mapping[str, Sequence[float | None]]) -> list[float]:
    """Each task's score averaged over the seeds that scored it (tasks with none left out), in key order."""
    out = []
    for key in sorted(per_task):
        got = [v for v in per_task[key] if v is not None]
        if got:
            out.append(sum(got) / len(got))
    return out


def _mean(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return round(sum(xs) / len(xs), 6) if xs else None


def _sd(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return round(math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)), 6)


def vote_shares(counts: Mapping[str, int]) -> dict[str, Any]:
    """SAG steps by vote: {steps, unanimous, split, none} (shares of the steps)."""
    total = sum(counts.values())
    return {"steps": total, **{k: round(counts.get(k, 0) / total, 4) if total else None
                               for k in ("unanimous", "split", "none")}}


def benchmark_result(tasks: Sequence[Any], seeds: int, scores: Mapping[tuple[str, int], Any],
                     trajs: Mapping[tuple[str, int], dict[str, Any]], *, seed: int, n_resamples: int) -> dict[str, Any]:
    """One benchmark's numbers. `scores`: key → ScoreResult; `trajs`: key → a light view of the trajectory
    ({steps, sag_votes}) for every stored one."""
    per_task: dict[str, list[float | None]] = {}
    metrics: dict[str, list[float]] = defaultdict(list)
    votes: Counter[str] = Counter()
    by_steps: dict[int, list[float]] = defaultdict(list)
    missing = unscorable = 0
    for t in tasks:
        row: list[float | None] = []
        for s in range(seeds):
            key = (t.key, s)
            view = trajs.get(key)
            sc = scores.get(key) if view is not None else None
            if view is None or sc is None:
                missing += 1
                row.append(None)
                continue
            votes.update(view["sag_votes"])
            if sc.correct is None:
                unscorable += 1
                row.append(None)
                continue
            row.append(float(sc.correct))
            by_steps[view["steps"]].append(float(sc.correct))
            for k, v in sc.metrics.items():
                metrics[k].append(float(v))
        per_task[t.key] = row
    means = task_means(per_task)
    per_seed = [_mean(r[s] for r in per_task.values() if r[s] is not None) for s in range(seeds)]
    seeds_ok = [x for x in per_seed if x is not None]
    return {
        "domain": tasks[0].domain if tasks else None,
        "tasks": len(tasks), "scored_tasks": len(means), "unscorable": unscorable, "missing": missing,
        "accuracy": _mean(means),
        "ci95": bootstrap_ci(means, seed=seed, n_resamples=n_resamples),
        "seeds": {"per_seed": per_seed, "mean": _mean(seeds_ok), "sd": _sd(seeds_ok)},
        "metrics": {k: _mean(v) for k, v in sorted(metrics.items())},
        "sag": vote_shares(votes),
        "by_steps": {str(k): {"n": len(v), "accuracy": _mean(v)} for k, v in sorted(by_steps.items())},
        "per_task": per_task,
    }


def averages(benchmarks: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """The paper's table: the mean of the benchmark accuracies per domain (factual, math) and over all."""
    by: dict[str, list[float]] = defaultdict(list)
    for b in benchmarks.values():
        if b["accuracy"] is not None:
            by[b["domain"] or "other"].append(b["accuracy"])
            by["all"].append(b["accuracy"])
    return {k: _mean(by.get(k, [])) for k in ("factual", "math", "all")}


def merge_by_steps(benchmarks: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Accuracy by number of steps over every benchmark of a method."""
    acc: dict[int, list[float]] = defaultdict(list)
    for b in benchmarks.values():
        for k, v in b["by_steps"].items():
            if v["accuracy"] is not None:
                acc[int(k)] += [v["accuracy"]] * v["n"]  # n copies of the mean: the pooled mean
    return {str(k): {"n": len(v), "accuracy": _mean(v)} for k, v in sorted(acc.items())}
