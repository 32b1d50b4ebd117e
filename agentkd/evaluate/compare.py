"""`agentkd eval compare RUN...`: evaluations side by side, per method and benchmark.

Each row shows every run's accuracy and 95% CI, the difference of each later run from the first, and
whether their CIs overlap (non-overlapping intervals: a difference the bootstrap does not explain by chance;
overlapping ones may still differ). Rendered as a rich table on a terminal or as markdown (`--md`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError
from agentkd.evaluate.report import ci_text, pct


def load_results(run: str | Path) -> dict[str, Any]:
    path = Path(run) / "results.json"
    if not path.is_file():
        raise ConfigError("no results.json here (run `agentkd eval` first)", file=Path(run))
    return json.loads(path.read_text())


def overlap(a: list[float] | None, b: list[float] | None) -> bool | None:
    if not a or not b:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def comparison(runs: list[str | Path]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the side-by-side table."""
    results = [load_results(r) for r in runs]
    names = [Path(r).name for r in runs]
    header = ["method", "benchmark"] + [f"{n} acc % [CI]" for n in names]
    header += [f"Δ {n} − {names[0]}" for n in names[1:]] + [f"CIs overlap ({n})" for n in names[1:]]
    keys: list[tuple[str, str]] = []
    for res in results:
        for m, mv in res["methods"].items():
            for b in [*mv["benchmarks"], "avg factual", "avg math", "avg all"]:
                if (m, b) not in keys:
                    keys.append((m, b))
    rows = []
    for m, b in keys:
        cells, accs, cis = [], [], []
        for res in results:
            mv = res["methods"].get(m)
            if mv is None:
                acc, ci = None, None
            elif b.startswith("avg "):
                acc, ci = mv["averages"].get(b[4:]), None
            else:
                r = mv["benchmarks"].get(b)
                acc, ci = (r["accuracy"], r["ci95"]) if r else (None, None)
            accs.append(acc)
            cis.append(ci)
            cells.append(f"{pct(acc)} {ci_text(ci)}" if ci else pct(acc))
        if all(a is None for a in accs):
            continue
        diffs = [("–" if a is None or accs[0] is None else f"{100 * (a - accs[0]):+.1f}") for a in accs[1:]]
        overlaps = [{True: "yes", False: "no", None: "–"}[overlap(cis[0], c)] for c in cis[1:]]
        rows.append([m, b, *cells, *diffs, *overlaps])
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def print_comparison(runs: list[str | Path], *, md: bool = False) -> str:
    """Print the table (markdown with `md`, else rich); returns the markdown text either way."""
    header, rows = comparison(runs)
    text = markdown(header, rows)
    if md:
        print(text, end="")
        return text
    from rich.console import Console
    from rich.table import Table

    t = Table(title="eval compare", title_justify="left")
    for h in header:
        t.add_column(h)
    for r in rows:
        t.add_row(*r)
    Console().print(t)
    return text
