"""PNG plots of an evaluation (matplotlib, Agg): per-benchmark accuracy bars with their 95% CIs, and
accuracy by number of steps. Written to OUT/plots/; returns the files written (relative names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(results: dict[str, Any], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    methods = results["methods"]
    written = []

    benches = sorted({b for m in methods.values() for b in m["benchmarks"]})
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(benches) * max(1, len(methods))), 3.6))
    width = 0.8 / max(1, len(methods))
    for i, (name, m) in enumerate(methods.items()):
        xs, ys, lo, hi = [], [], [], []
        for j, b in enumerate(benches):
            r = m["benchmarks"].get(b)
            if r is None or r["accuracy"] is None:
                continue
            acc = 100 * r["accuracy"]
            ci = r["ci95"] or [r["accuracy"]] * 2
            xs.append(j + (i - (len(methods) - 1) / 2) * width)
            ys.append(acc)
            lo.append(max(0.0, acc - 100 * ci[0]))
            hi.append(max(0.0, 100 * ci[1] - acc))
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=3, label=name)
    ax.set_xticks(range(len(benches)), benches, rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{results['model']}: accuracy with 95% bootstrap CI")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "accuracy.png", dpi=120)
    plt.close(fig)
    written.append("plots/accuracy.png")

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, m in methods.items():
        pts = sorted((int(k), v) for k, v in m["by_steps"].items() if v["accuracy"] is not None)
        if pts:
            ax.plot([k for k, _ in pts], [100 * v["accuracy"] for _, v in pts], marker="o", label=name)
            for k, v in pts:
                ax.annotate(f"n={v['n']}", (k, 100 * v["accuracy"]), fontsize=7, textcoords="offset points",
                            xytext=(0, 5), ha="center")
    ax.set_xlabel("steps in the trajectory")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("accuracy by number of steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "by_steps.png", dpi=120)
    plt.close(fig)
    written.append("plots/by_steps.png")
    return written
