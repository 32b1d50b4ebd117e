"""OUT/stamps.json: per stage, the hash of its resolved config and of its inputs' stamps, and whether it
finished. Same hash + finished + outputs present = skipped; same hash, not finished = resumed with the
stage's own resume; another hash = its outputs are cleared (request caches kept) and it runs again, and so
does every stage after it (their input hashes change with it)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from agentkd.core.hashing import stable_hash


def stage_hash(config: dict[str, Any], inputs: dict[str, str]) -> str:
    return stable_hash({"config": config, "inputs": inputs}, length=32)


class Stamps:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, stage: str) -> dict[str, Any] | None:
        return self.data.get(stage)

    def set(self, stage: str, record: dict[str, Any]) -> None:
        self.data[stage] = {**record, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n")
        os.replace(tmp, self.path)
