"""Curated datasets in the on-disk contract format (notes: "Curated dataset on disk"), built for training tests
and the training benchmark: agent trajectories of varied lengths (1-4 code steps with observations)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

SYSTEM = "You solve tasks by writing Python code. Call final_answer(x) when done."
WORDS = ["Paris", "France", "capital", "river", "search", "answer", "number", "fox", "quick", "brown"]


def trajectory(rng: random.Random, steps: int, *, correct: bool = True) -> list[dict]:
    q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Task: {q}?"}]
    for s in range(steps):
        thought = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10)))
        msgs.append({"role": "assistant", "content": f"Thought: {thought}\n```py\nweb_search('{q}')\n```<end_code>"})
        obs = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25)))
        msgs.append({"role": "user", "content": f"Observation:\n{obs} {s}"})
    answer = "Paris" if correct else rng.choice(["Lyon", "Rome", "42"])
    msgs.append({"role": "assistant", "content": f"Thought: done\n```py\nfinal_answer('{answer}')\n```<end_code>"})
    return msgs


def rows(n: int, seed: int, *, correct: bool = True, max_steps: int = 4) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        steps = rng.randint(0, max_steps)
        out.append({"messages": trajectory(rng, steps, correct=correct), "task_key": f"t{seed}-{i}",
                    "task_id": str(i), "domain": "factual", "source": "test", "teacher": "scripted",
                    "score": 1.0 if correct else 0.0, "prefix_mode": "none", "source_run": "runs/test",
                    "sample_index": 0, "num_steps": steps + 1})
    return out


def make_dataset(folder: Path, *, n_train: int = 24, n_val: int = 4, n_pairs: int = 8, max_steps: int = 4,
                 seed: int = 0) -> Path:
    """DATASET/ (train, validation, rejected) + DATASET/pairs (train, validation) + card.{md,json}."""
    from datasets import Dataset, DatasetDict

    train, val = rows(n_train, seed, max_steps=max_steps), rows(n_val, seed + 1, max_steps=max_steps)
    rejected = rows(n_pairs, seed + 2, correct=False, max_steps=max_steps)
    splits = {"train": train, "validation": val, "rejected": rejected}
    DatasetDict({k: Dataset.from_list(v) for k, v in splits.items() if v}).save_to_disk(str(folder))

    def pair(good: dict, bad: dict) -> dict:
        return {"prompt": good["messages"][:2], "chosen": good["messages"][2:],
                "rejected": good["messages"][:2][:0] + bad["messages"][2:], "task_key": good["task_key"]}

    pairs = [pair(g, b) for g, b in zip(train, rejected, strict=False)]
    DatasetDict({"train": Dataset.from_list(pairs), "validation": Dataset.from_list(pairs[:2])}).save_to_disk(
        str(folder / "pairs"))
    sha = hashlib.sha256(json.dumps([train, val], sort_keys=True).encode()).hexdigest()
    (folder / "card.json").write_text(json.dumps({"sha256": sha, "runs": ["runs/test"], "train": len(train),
                                                  "validation": len(val), "pairs": len(pairs)}))
    (folder / "card.md").write_text(f"# test dataset\n\nsha256: {sha}\n")
    return folder
