"""Evaluation: students (or the teacher) on held-out benchmarks, with SAG, baselines, CIs, reports, plots.

    from agentkd.evaluate import EvalConfig, evaluate
    results = evaluate(EvalConfig(...), "runs/eval-NAME")     # `agentkd eval RECIPE`

`runner` (the episode engine configured with the student), `baselines` (CoT, CoT+RAG), `metrics` (accuracy,
seeded bootstrap CIs), `report`, `plots`, `manifest`, `compare` (`agentkd eval compare RUN...`).
"""

from agentkd.evaluate.config import EvalConfig
from agentkd.evaluate.runner import evaluate

__all__ = ["EvalConfig", "evaluate"]
