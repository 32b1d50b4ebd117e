"""Shared test set-up: offline environment, paths to ../shared data, and a tiny real Qwen2 model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="session")
def shared_bench() -> Path:
    """../shared/data/benchmarks, or skip: a user's clone does not have it."""
    if not SHARED_BENCH.is_dir():
        pytest.skip(f"needs the paper's benchmark files at {SHARED_BENCH} (present in the dev/CI workspace only)")
    return SHARED_BENCH
