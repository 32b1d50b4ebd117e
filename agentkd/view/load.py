"""Read a run folder (and optionally the dataset curated from it) into the plain records the viewer embeds.

Trajectories are read as raw JSON objects, not validated `Trajectory` models, so a file written by an older or
newer agentkd still opens. Besides `trajectories.jsonl` the viewer shows `failed.jsonl` (infrastructure
failures, marked `failed`), the scores sidecar `scores.jsonl`, `summary.json`, `config.yaml` and, with a
dataset, the curation verdict of each trajectory from `DATASET/decisions.jsonl`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError
from agentkd.core.jsonl import iter_jsonl

MAX_CHARS = 50_000  # per text field: a runaway observation must not make the page unusable

_STEP_FIELDS = {"index", "model_output", "thought", "code", "observation", "error", "prefix", "final_answer",
                "is_final", "tokens_in", "tokens_out", "latency_s", "cost_usd", "extra"}


def _cut(value: Any, limit: int = MAX_CHARS) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"\n…[{len(value) - limit} more characters not shown; see the run's JSONL files]"
    return value


def finite(value: Any) -> Any:
    """JSON without NaN/Infinity (JSON.parse rejects them): non-finite floats become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _deep_cut(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, dict):
        return {k: _deep_cut(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_cut(v) for v in value]
    return value


def traj_key(obj: dict[str, Any]) -> tuple[str, int]:
    """`Trajectory.key` of a raw trajectory object: (source/id, sample_index)."""
    task = obj.get("task") or {}
    tid = str(task.get("id"))
    key = f"{task['source']}/{tid}" if task.get("source") else tid
    return key, int((obj.get("provenance") or {}).get("sample_index") or 0)


def _key_of(line: dict[str, Any]) -> tuple[str, int] | None:
    k = line.get("key")
    if isinstance(k, (list, tuple)) and len(k) == 2:
        try:
            return str(k[0]), int(k[1])
        except (TypeError, ValueError):
            return None
    return None


def read_scores(run: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """The sidecar `RUN/scores.jsonl` by trajectory key (later lines win: a re-score appends)."""
    out = {}
    for line in iter_jsonl(run / "scores.jsonl"):
        key = _key_of(line)
        if key is not None:
            out[key] = {k: line.get(k) for k in ("correct", "metrics", "scorer", "reason", "judge")}
    return out


def read_decisions(dataset: Path, run: Path) -> dict[tuple[str, int], str]:
    """Curation verdicts of this run's trajectories from `DATASET/decisions.jsonl` (absent file: none).

    A line belongs to this run when its `run` names the same folder; when no line does (the dataset was
    curated from another working directory) lines whose `run` has the same folder name are taken."""
    exact: dict[tuple[str, int], str] = {}
    by_name: dict[tuple[str, int], str] = {}
    here = run.resolve()
    for line in iter_jsonl(dataset / "decisions.jsonl"):
        key, verdict = _key_of(line), line.get("verdict")
        if key is None or not verdict:
            continue
        name = str(line.get("run") or "")
        if name and Path(name).resolve() == here:
            exact[key] = str(verdict)
        elif name and Path(name).name == run.name:
            by_name[key] = str(verdict)
    return exact or by_name


def _step(raw: dict[str, Any]) -> dict[str, Any]:
    extra = dict(raw.get("extra") or {})
    sag = extra.pop("sag", None)
    step = {
        "index": raw.get("index"),
        "output": _cut(raw.get("model_output")),
        "thought": _cut(raw.get("thought")),
        "code": _cut(raw.get("code")),
        "obs": _cut(raw.get("observation")),
        "error": _cut(raw.get("error")),
        "prefix": _cut(raw.get("prefix")),
        "final": _deep_cut(raw.get("final_answer")),
        "is_final": bool(raw.get("is_final")),
        "tok_in": raw.get("tokens_in") or 0,
        "tok_out": raw.get("tokens_out") or 0,
        "latency": raw.get("latency_s") or 0.0,
        "cost": raw.get("cost_usd") or 0.0,
    }
    if isinstance(sag, dict):
        step["sag"] = _deep_cut(sag)
    other = {k: v for k, v in raw.items() if k not in _STEP_FIELDS}
    extra.update(other)
    if extra:
        step["extra"] = _deep_cut(extra)
    return step


class _Prompts:
    """System and user prompts are mostly the same across a run: stored once, referenced by index."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def ref(self, text: Any) -> int | None:
        if not isinstance(text, str):
            return None
        if text not in self._index:
            self._index[text] = len(self.items)
            self.items.append(_cut(text))
        return self._index[text]


def _trajectory(obj: dict[str, Any], *, failed: bool, score: dict | None, verdict: str | None,
                prompts: _Prompts) -> dict[str, Any]:
    task = obj.get("task") or {}
    prov = obj.get("provenance") or {}
    steps = [_step(s) for s in obj.get("steps") or [] if isinstance(s, dict)]
    key, sample = traj_key(obj)
    correct = score.get("correct") if score else None
    if score is None and isinstance((obj.get("scores") or {}).get("correct"), (int, float)):
        correct = float(obj["scores"]["correct"])  # scored in place (no sidecar)
    return {
        "key": key, "sample": sample, "id": str(task.get("id")), "source": task.get("source") or "",
        "domain": task.get("domain") or "", "question": _cut(task.get("question") or ""),
        "gold": _deep_cut(task.get("answer")), "final": _deep_cut(obj.get("final_answer")),
        "status": obj.get("status") or "", "reason": _cut(obj.get("status_reason")),
        "failed": failed, "correct": correct, "score": score, "scores": obj.get("scores") or {},
        "verdict": verdict, "model": prov.get("model") or "",
        "cost": sum(s["cost"] for s in steps), "tok_in": sum(s["tok_in"] for s in steps),
        "tok_out": sum(s["tok_out"] for s in steps), "latency": sum(s["latency"] for s in steps),
        "sys": prompts.ref(obj.get("system_prompt")), "user": prompts.ref(obj.get("user_prompt")),
        "prov": _deep_cut(prov), "meta": _deep_cut(task.get("metadata") or {}), "steps": steps,
    }


def load_run(run_dir: str | os.PathLike, *, dataset: str | os.PathLike | None = None) -> dict[str, Any]:
    """Everything the page shows about a run, as one JSON-ready dict."""
    run = Path(run_dir)
    if not (run / "trajectories.jsonl").is_file():
        raise ConfigError("not a run folder: it has no trajectories.jsonl", file=run)
    if dataset is not None and not Path(dataset).is_dir():
        raise ConfigError("dataset folder not found", file=dataset)
    scores = read_scores(run)
    decisions = read_decisions(Path(dataset), run) if dataset is not None else {}
    prompts = _Prompts()
    trajs = []
    for name, failed in (("trajectories.jsonl", False), ("failed.jsonl", True)):
        for obj in iter_jsonl(run / name):
            if not isinstance(obj, dict) or not isinstance(obj.get("task"), dict):
                continue
            key = traj_key(obj)
            trajs.append(_trajectory(obj, failed=failed, score=scores.get(key), verdict=decisions.get(key),
                                     prompts=prompts))
    summary = None
    if (run / "summary.json").is_file():
        try:
            summary = json.loads((run / "summary.json").read_text())
        except ValueError:
            summary = None
    config = (run / "config.yaml").read_text(errors="replace") if (run / "config.yaml").is_file() else None
    return {
        "run": str(run), "dataset": str(dataset) if dataset is not None else None,
        "has_scores": bool(scores), "has_decisions": bool(decisions),
        "summary": summary, "config": _cut(config), "prompts": prompts.items, "trajectories": trajs,
    }
