"""What sits beside an adapter so a result can be traced: `agentkd_provenance.json`, `recipe.yaml`,
the dataset card, and the training curve.

`agentkd_provenance.json` = {recipe (the resolved train section), dataset (path), dataset_sha256 (from
DATASET/card.json), dataset_card, base_model (the spec) and base_model_path, method, adapter (the SFT
adapter a DPO run started from), agentkd/torch/transformers/trl/peft versions, the mask check, metrics}.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

PROVENANCE = "agentkd_provenance.json"
CURVE = "training_curve.png"


def read_card(dataset_dir: Path) -> dict[str, Any]:
    p = dataset_dir / "card.json"
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text())
    except ValueError:
        return {}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    from agentkd import __version__

    out = {"agentkd": __version__}
    for pkg in ("torch", "transformers", "trl", "peft", "datasets", "accelerate"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def write_provenance(out: Path, *, config: Any, base_path: Path, mask_report: Any | None,
                     metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    import yaml

    dataset = Path(config.dataset)
    card = read_card(dataset)
    recipe = config.model_dump(mode="json")
    (out / "recipe.yaml").write_text(yaml.safe_dump({"train": recipe}, sort_keys=False))
    if (dataset / "card.md").exists():
        shutil.copy2(dataset / "card.md", out / "dataset_card.md")
    report = None
    if mask_report is not None:
        report = {k: getattr(mask_report, k) for k in ("examples", "trained_tokens", "total_tokens", "trained_share")
                  if hasattr(mask_report, k)}
    v = versions()
    prov = {
        "recipe": recipe,
        "method": config.method,
        "dataset": str(dataset.resolve()),
        "dataset_sha256": card.get("sha256"),
        "dataset_card": card,
        "base_model": config.model,
        "base_model_path": str(base_path),
        "adapter": config.adapter,
        "agentkd_version": v["agentkd"],
        "versions": v,
        "mask_check": report,
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    path = out / PROVENANCE
    path.write_text(json.dumps(prov, indent=2, default=str))
    return path


def read_provenance(adapter: Path) -> dict[str, Any]:
    p = Path(adapter) / PROVENANCE
    return json.loads(p.read_text()) if p.exists() else {}
