"""The dataset card: what went in, what each filter removed, what came out (DATASET/card.json + card.md).

Everything in it is a function of the inputs and the config (no timestamps), so two runs on the same input
give the same card, and its `sha256` (the content hash of the exported splits) identifies the dataset.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any


def distribution(values: list[int] | Any) -> dict[str, float] | None:
    """min / median / p95 / max (nearest rank) of a list of numbers; None when empty."""
    v = sorted(values)
    if not v:
        return None

    def rank(q: float) -> float:
        return v[min(len(v) - 1, max(0, math.ceil(q * len(v)) - 1))]

    mid = len(v) // 2
    median = v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
    return {"min": v[0], "median": median, "p95": rank(0.95), "max": v[-1], "mean": round(sum(v) / len(v), 3)}


def counts(c: Counter) -> dict[str, int]:
    return {str(k): n for k, n in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def render_markdown(card: dict[str, Any]) -> str:
    """A human-readable card (the JSON one is the record)."""
    lines = ["# agentkd curated dataset", "", f"- sha256: `{card['sha256']}`",
             f"- agentkd: {card['agentkd_version']}", f"- student prompt: `{card['config']['prompt']}`",
             f"- tokenizer: {card['tokens']['tokenizer'] if card['tokens'] else '-'}", "", "## Splits", "",
             "| split | rows | tasks |", "|---|---|---|"]
    for name, s in card["splits"].items():
        lines.append(f"| {name} | {s['rows']} | {s.get('tasks', '-')} |")
    inp = card["input"]
    lines += ["", "## Filters (in order)", "", f"Input: {inp['trajectories']} trajectories "
              f"({inp['bad_lines']} bad lines skipped).", "", "| filter | removed | remaining |", "|---|---|---|"]
    for f in card["filters"]:
        lines.append(f"| {f['name']} | {f['removed']} | {f['remaining']} |")
    lines += ["", f"Unscorable (neither kept nor rejected): {card['unscorable']['count']}"]
    for reason, n in card["unscorable"]["reasons"].items():
        lines.append(f"- {reason}: {n}")
    rej = card["rejected"]
    lines.append(f"\nRejected split: {rej['rows']} incorrect trajectories ({rej['length_cap']} over the length cap "
                 f"left out).")

    def table(title: str, data: dict[str, Any], head: str) -> None:
        nonlocal lines
        lines += ["", f"## {title}", "", f"| {head} | input | kept |", "|---|---|---|"]
        for k in data["input"]:
            lines.append(f"| {k} | {data['input'][k]} | {data['kept'].get(k, 0)} |")

    table("Domains", card["by_domain"], "domain")
    table("Sources", card["by_source"], "source")
    table("Teachers", card["by_teacher"], "teacher")
    lines += ["", "## Kept trajectories", ""]
    st = card["steps"]
    if st:
        lines.append(f"- steps per trajectory: min {st['min']}, median {st['median']}, p95 {st['p95']}, "
                     f"max {st['max']}; histogram {json.dumps(card['steps_histogram'])}")
    tok = card["tokens"]
    if tok and tok.get("min") is not None:
        lines.append(f"- tokens ({tok['tokenizer']}): min {tok['min']}, median {tok['median']}, p95 {tok['p95']}, "
                     f"max {tok['max']}")
    lines.append(f"- tool calls in code actions: {json.dumps(card['tool_calls'])}")
    cost = card["teacher_cost_usd"]
    lines.append(f"- teacher cost: ${cost['kept']:.4f} kept of ${cost['input']:.4f} for all input trajectories")
    lines += ["", "## Runs", "", "| run | config sha256 | summary sha256 | trajectories sha256 | lines |",
              "|---|---|---|---|---|"]
    for r in card["runs"]:
        def short(h: str | None) -> str:
            return f"`{h[:16]}`" if h else "-"
        lines.append(f"| {r['path']} | {short(r['config_sha256'])} | {short(r['summary_sha256'])} | "
                     f"{short(r['trajectories_sha256'])} | {r['lines']} |")
    return "\n".join(lines) + "\n"
