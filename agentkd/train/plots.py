"""The training curve as a PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def curve_points(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series for train loss and eval loss from a Trainer's `state.log_history`."""
    out: dict[str, list[tuple[int, float]]] = {"loss": [], "eval_loss": []}
    for row in log_history:
        for key in out:
            if key in row and "step" in row:
                out[key].append((int(row["step"]), float(row[key])))
    return out


def plot_curve(log_history: list[dict[str, Any]], path: Path, title: str = "training curve") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = curve_points(log_history)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, label, style in (("loss", "train loss", "-"), ("eval_loss", "eval loss (validation)", "o--")):
        if pts[key]:
            xs, ys = zip(*pts[key], strict=True)
            ax.plot(xs, ys, style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(title)
    if pts["loss"] or pts["eval_loss"]:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
