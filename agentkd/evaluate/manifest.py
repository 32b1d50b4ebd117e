"""OUT/manifest.json: what an evaluation's numbers depend on, so they can be traced and recomputed.

model and adapter (the adapter's files hashed: sha256 over their names and bytes), the training data
(`dataset_sha256`, `dataset` and `base_model` from the adapter's `agentkd_provenance.json`, written by
`agentkd train`; absent → null), each benchmark's task files and their sha256, seeds, sampling and SAG,
the bootstrap's settings, the sandbox backend and the agentkd version. No timestamps: a rerun writes the
same file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from agentkd import __version__
from agentkd.core.types import Task
from agentkd.evaluate.config import EvalConfig

PROVENANCE = "agentkd_provenance.json"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_sha256(folder: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0" + file_sha256(p).encode() + b"\n")
    return h.hexdigest()


def adapter_info(adapter: str | None) -> dict[str, Any] | None:
    if not adapter:
        return None
    path = Path(adapter).expanduser()
    info: dict[str, Any] = {"path": str(path), "sha256": None, "provenance": None, "dataset_sha256": None}
    if path.is_dir():
        info["sha256"] = folder_sha256(path)
        prov = path / PROVENANCE
        if prov.is_file():
            try:
                data = json.loads(prov.read_text())
            except (OSError, ValueError):
                data = None
            if isinstance(data, dict):
                info["provenance"] = {k: data.get(k) for k in ("dataset", "dataset_sha256", "base_model",
                                                              "agentkd_version") if k in data}
                info["dataset_sha256"] = data.get("dataset_sha256")
    return info


def task_files(src: Any) -> list[str]:
    """The files a benchmark's tasks were read from (suite YAML and data file, or the task file)."""
    from agentkd.core.suites import list_suites, load_suite
    from agentkd.core.taskfiles import resolve_path

    files: list[str] = []
    if src.suite:
        suite = load_suite(src.suite)
        yaml_ref = list_suites().get(src.suite) if not src.suite.endswith((".yaml", ".yml")) else src.suite
        if yaml_ref is not None:
            files.append(str(yaml_ref))
        where = suite.where()
        if where:
            files.append(where)
    elif src.path:
        p = resolve_path(src.path)
        if p is not None:
            files.append(str(p))
    return files


def build_manifest(cfg: EvalConfig, benchmarks: dict[str, list[Task]]) -> dict[str, Any]:
    from agentkd.evaluate.metrics import CI_METHOD, CONFIDENCE
    from agentkd.evaluate.runner import benchmark_name
    from agentkd.sandbox import choose_backend

    suites = {}
    for src in cfg.benchmarks:
        name = benchmark_name(src)
        files = task_files(src)
        suites[name] = {"source": src.model_dump(mode="json", exclude_defaults=True),
                        "tasks": len(benchmarks.get(name, [])),
                        "files": {f: file_sha256(f) for f in files if Path(f).is_file()},
                        "hf": src.hf}
    try:
        backend = choose_backend(cfg.sandbox)[0].name if "agent" in cfg.methods else None
    except Exception as e:  # recorded, not fatal: the run itself would have failed first
        backend = f"unavailable: {e}"
    return {
        "agentkd_version": __version__,
        "model": cfg.student.model_dump(mode="json", include={"model", "api_base", "adapter", "device", "dtype"}),
        "adapter": adapter_info(cfg.student.adapter),
        "sampling": cfg.student.sampling.model_dump(mode="json"),
        "agent": {"prompt": cfg.agent.prompt, "max_steps": cfg.agent.max_steps, "sag": cfg.agent.sag.model_dump()},
        "methods": list(cfg.methods),
        "baselines": cfg.baselines.model_dump(),
        "judge": cfg.judge.model_dump(mode="json") if cfg.judge else None,
        "seeds": {"count": cfg.seeds, "base": cfg.seed, "per_seed": [cfg.seed + s for s in range(cfg.seeds)]},
        "bootstrap": {"method": CI_METHOD, "confidence": CONFIDENCE, "n_resamples": cfg.bootstrap_resamples,
                      "seed": cfg.seed},
        "sandbox": {"backend": backend, "config": cfg.sandbox.backend},
        "tools": cfg.tools.model_dump(mode="json"),
        "benchmarks": suites,
    }
