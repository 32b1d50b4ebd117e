"""OUT/summary.json and OUT/summary.md: what the run collected, kept, trained on, and how the base and
the trained student did on the held-out tasks.

Evaluation rows give accuracy and the rate of well-formed, executable actions (steps with a parsed code
action that ran without error ÷ steps), each with the seeded bootstrap 95% CI over tasks of
`agentkd.evaluate.metrics.bootstrap_ci` (a task's value: its mean over seeds / its pooled steps).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from agentkd.core.jsonl import iter_jsonl
from agentkd.evaluate.metrics import bootstrap_ci, task_means

SUMMARY_SCHEMA = 1


def _key(obj: dict[str, Any]) -> tuple[str, int]:
    t = obj.get("task", {})
    return (f"{t['source']}/{t['id']}" if t.get("source") else str(t.get("id")),
            int(obj.get("provenance", {}).get("sample_index", 0)))


def action_rate(run: Path, *, seed: int, n_resamples: int) -> dict[str, Any]:
    """Well-formed executable steps ÷ steps over a run folder's trajectories, pooled and with a CI over tasks."""
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for obj in iter_jsonl(run / "trajectories.jsonl"):
        row = per_task[_key(obj)[0]]
        for s in obj.get("steps", []):
            row[1] += 1
            row[0] += s.get("code") is not None and not s.get("error")
    good = sum(r[0] for r in per_task.values())
    steps = sum(r[1] for r in per_task.values())
    rates = [r[0] / r[1] for _, r in sorted(per_task.items()) if r[1]]
    return {"rate": round(good / steps, 6) if steps else None, "good_steps": good, "steps": steps,
            "ci95": bootstrap_ci(rates, seed=seed, n_resamples=n_resamples), "tasks": len(rates)}


def collect_numbers(run: Path) -> dict[str, Any]:
    from agentkd.score.store import read_scores

    statuses: Counter[str] = Counter()
    keys = []
    for obj in iter_jsonl(run / "trajectories.jsonl"):
        statuses[obj.get("status", "?")] += 1
        keys.append(_key(obj))
    scores = read_scores(run) if (run / "scores.jsonl").exists() else {}
    per_task: dict[str, list[float | None]] = defaultdict(list)
    for k in keys:
        sc = scores.get(k)
        per_task[k[0]].append(None if sc is None or sc.correct is None else float(sc.correct))
    scored = [v for vs in per_task.values() for v in vs if v is not None]
    return {"folder": str(run), "trajectories": len(keys), "tasks": len(per_task), "statuses": dict(statuses),
            "scored": len(scored), "success_rate": round(sum(scored) / len(scored), 6) if scored else None,
            "success_ci95": bootstrap_ci(task_means(per_task), seed=0, n_resamples=10000) if scored else None}


def dataset_numbers(ds: Path) -> dict[str, Any]:
    card = json.loads((ds / "card.json").read_text())
    return {"folder": str(ds), "sha256": card["sha256"], "input_trajectories": card["input"]["trajectories"],
            "splits": {k: v["rows"] for k, v in card["splits"].items()},
            "removed": {f["name"]: f["removed"] for f in card["filters"] if f["removed"]}}


def train_numbers(model: Path) -> dict[str, Any]:
    hist = json.loads((model / "log_history.json").read_text()) if (model / "log_history.json").exists() else []
    losses = [(h["step"], h["loss"]) for h in hist if "loss" in h]
    end = next((h for h in reversed(hist) if "train_loss" in h), {})
    evals = [h["eval_loss"] for h in hist if "eval_loss" in h]
    return {"folder": str(model), "steps": end.get("step") or (losses[-1][0] if losses else None),
            "train_loss": end.get("train_loss"), "first_loss": losses[0][1] if losses else None,
            "last_loss": losses[-1][1] if losses else None, "eval_loss": evals[-1] if evals else None}


def eval_numbers(folder: Path, cfg: Any) -> dict[str, Any]:
    results = json.loads((folder / "results.json").read_text())
    out: dict[str, Any] = {"folder": str(folder), "report": str(folder / "report.md"),
                           "model": results["model"], "adapter": results["adapter"], "methods": {}}
    for method, m in results["methods"].items():
        per_task = {k: v for b in m["benchmarks"].values() for k, v in b["per_task"].items()}
        means = task_means(per_task)
        out["methods"][method] = {
            "tasks": len(per_task), "scored_tasks": len(means),
            "accuracy": round(sum(means) / len(means), 6) if means else None,
            "accuracy_ci95": bootstrap_ci(means, seed=cfg.seed, n_resamples=cfg.bootstrap_resamples),
            "well_formed_actions": action_rate(folder / method, seed=cfg.seed, n_resamples=cfg.bootstrap_resamples),
            "benchmarks": {name: {"accuracy": b["accuracy"], "ci95": b["ci95"], "tasks": b["tasks"]}
                           for name, b in m["benchmarks"].items()},
        }
    return out


def build(plan: Any, outcomes: list[Any], views: list[Path], stopped: str | None = None) -> dict[str, Any]:
    st = {s.name: s for s in plan.stages}
    data: dict[str, Any] = {"schema": SUMMARY_SCHEMA, "recipe": str(plan.recipe), "out": str(plan.out),
                            "stages": {o.name: {"status": o.status, "seconds": o.seconds, **o.detail}
                                       for o in outcomes}}
    # a stage that did not get as far as its outputs (a stop, an error) has no section
    if "collect" in st and (st["collect"].out / "trajectories.jsonl").exists():
        data["collect"] = collect_numbers(st["collect"].out)
    if "curate" in st and (st["curate"].out / "card.json").exists():
        data["dataset"] = dataset_numbers(st["curate"].out)
    if "train" in st and (st["train"].out / "log_history.json").exists():
        data["train"] = train_numbers(st["train"].out)
    data["eval"] = {s.name: eval_numbers(s.out, s.config) for s in plan.stages
                    if s.section == "evaluate" and (s.out / "results.json").exists()}
    if stopped:
        data["stopped"] = stopped
    data["views"] = [str(v) for v in views]
    return data


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _ci(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def render_markdown(d: dict[str, Any]) -> str:
    lines = [f"# agentkd run: {d['recipe']}", "", f"Run folder: `{d['out']}`", "", "| stage | status | seconds |",
             "|---|---|---|"]
    lines += [f"| {k} | {v['status']} | {v['seconds']} |" for k, v in d["stages"].items()]
    if d.get("stopped"):
        lines += ["", f"**Stopped:** {d['stopped']}"]
    if c := d.get("collect"):
        lines += ["", "## Collected", "",
                  f"{c['trajectories']} trajectories over {c['tasks']} tasks ({c['folder']}); statuses: "
                  + ", ".join(f"{k} {v}" for k, v in c["statuses"].items()) + "; "
                  f"success rate {_pct(c['success_rate'])} {_ci(c['success_ci95'])} of {c['scored']} scored."]
    if ds := d.get("dataset"):
        lines += ["", "## Kept (dataset card)", "", f"{ds['input_trajectories']} trajectories read → "
                  + ", ".join(f"{k} {v}" for k, v in ds["splits"].items()) + f" rows ({ds['folder']}); removed: "
                  + (", ".join(f"{k} {v}" for k, v in ds["removed"].items()) or "none") + "."]
    if t := d.get("train"):
        def f(x: float | None) -> str:
            return "–" if x is None else f"{x:.4f}"

        lines += ["", "## Trained", "", f"{t['steps']} steps; train loss {f(t['train_loss'])} (first logged "
                  f"{f(t['first_loss'])}, last {f(t['last_loss'])}); eval loss {f(t['eval_loss'])} ({t['folder']})."]
    if d.get("eval"):
        lines += ["", "## Held-out evaluation (95% bootstrap CIs over tasks)", "",
                  "| run | model | method | tasks | accuracy | CI | well-formed actions | CI | steps |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, e in d["eval"].items():
            model = e["model"] + (f" + {e['adapter']}" if e["adapter"] else "")
            for method, m in e["methods"].items():
                w = m["well_formed_actions"]
                lines.append(f"| {name} | {model} | {method} | {m['tasks']} | {_pct(m['accuracy'])} | "
                             f"{_ci(m['accuracy_ci95'])} | {_pct(w['rate'])} | {_ci(w['ci95'])} | {w['steps']} |")
        lines += ["", "Well-formed actions: steps with a parsed code action that ran without error ÷ steps.",
                  "Reports: " + ", ".join(f"`{e['report']}`" for e in d["eval"].values())]
    if d.get("views"):
        lines += ["", "Viewer: " + ", ".join(f"`{v}`" for v in d["views"])]
    return "\n".join(lines) + "\n"


def write_summary(plan: Any, outcomes: list[Any], views: list[Path], stopped: str | None = None,
                  ) -> tuple[dict[str, Any], Path, Path]:
    data = build(plan, outcomes, views, stopped)
    js, md = plan.out / "summary.json", plan.out / "summary.md"
    for path, text in ((js, json.dumps(data, indent=2) + "\n"), (md, render_markdown(data))):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return data, js, md
