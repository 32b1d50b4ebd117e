"""OUT/report.md: the evaluation as a markdown page (tables from results.json, the plots, the manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def ci_text(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{pct(ci[0])}, {pct(ci[1])}]"


def render_report(results: dict[str, Any], *, plots: list[str], manifest: dict[str, Any]) -> str:
    lines = [f"# Evaluation: {results['model']}", ""]
    adapter = manifest.get("adapter") or {}
    lines += [f"- model: `{results['model']}`" + (f", adapter `{adapter.get('path')}` (sha256 "
                                                  f"`{str(adapter.get('sha256'))[:12]}`)" if adapter else ""),
              f"- training data sha256: `{adapter.get('dataset_sha256') or 'unknown'}`",
              f"- seeds: {results['seeds']} (base {results['seed']}); judge: {results['judge'] or 'none (exact match)'}",
              f"- SAG: {_sag_text(results.get('sag'))}",
              f"- 95% CI: seeded bootstrap over tasks ({results['ci']['method']}, {results['ci']['n_resamples']} "
              f"resamples, seed {results['ci']['seed']}); recompute from `per_task` in results.json",
              f"- agentkd {manifest.get('agentkd_version')}, sandbox {manifest.get('sandbox', {}).get('backend')}", ""]
    for method, m in results["methods"].items():
        lines += [f"## {method}", "", "| benchmark | n | accuracy % | 95% CI | seeds mean ± sd | metrics | SAG "
                  "unanimous / split / none |", "|---|---|---|---|---|---|---|"]
        for name, b in m["benchmarks"].items():
            s = b["seeds"]
            seeds = f"{pct(s['mean'])} ± {pct(s['sd'])}" if s["mean"] is not None else "–"
            metrics = ", ".join(f"{k} {pct(v)}" for k, v in b["metrics"].items()) or "–"
            lines.append(f"| {name} | {b['scored_tasks']}/{b['tasks']} | {pct(b['accuracy'])} | {ci_text(b['ci95'])} "
                         f"| {seeds} | {metrics} | {_votes(b['sag'])} |")
        av = m["averages"]
        lines += ["", f"Averages (mean of benchmark accuracies): factual {pct(av['factual'])}, math "
                  f"{pct(av['math'])}, all {pct(av['all'])}. SAG steps overall: {_votes(m['sag'])}.", ""]
    lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    lines += ["## Benchmarks", "", "| benchmark | tasks | files (sha256) |", "|---|---|---|"]
    for name, b in manifest.get("benchmarks", {}).items():
        files = "<br>".join(f"`{Path(f).name}` `{h[:12]}`" for f, h in b["files"].items()) or (b.get("hf") or "–")
        lines.append(f"| {name} | {b['tasks']} | {files} |")
    return "\n".join(lines) + "\n"


def _sag_text(sag: dict[str, Any] | None) -> str:
    if not sag or sag.get("n", 1) <= 1:
        return "off (one action per step)"
    return f"N={sag['n']}, temperature {sag['temperature']}, top_p {sag['top_p']}"


def _votes(v: dict[str, Any]) -> str:
    if not v or not v.get("steps"):
        return "–"
    return f"{pct(v['unanimous'])} / {pct(v['split'])} / {pct(v['none'])} % of {v['steps']}"


def write_report(results: dict[str, Any], path: Path, *, plots: list[str], manifest: dict[str, Any]) -> None:
    path.write_text(render_report(results, plots=plots, manifest=manifest))
