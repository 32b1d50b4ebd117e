"""Writers for the curated dataset: Arrow splits (later saved as an HF DatasetDict) and the export formats.

Rows stream through; nothing holds a split. Each writer also feeds a sha256 of its rows' canonical JSON
(in write order), the content hash of the dataset that the card records and training cites.

Formats under DATASET/exports/ (train split; the validation split beside it with a `_validation` suffix):
* `sharegpt.json` — LLaMA-Factory ShareGPT: `{"conversations": [{"from": "human"|"gpt"|"observation",
  "value": ...}], "system": ...}`; observations are `observation` turns (their `Observation:` prefix kept so
  the text is what the model saw). `dataset_info.json` beside it registers both files with LLaMA-Factory.
* `axolotl.jsonl` — axolotl `type: chat_template` rows: `{"messages": [{"role", "content", "train"}]}` with
  `train: true` on assistant turns only (`message_field_training: train`).
* `trl.jsonl` — TRL conversational: `{"messages": [{"role", "content"}]}`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MESSAGE = {"role": "string", "content": "string"}
SFT_COLUMNS: dict[str, Any] = {
    "messages": [MESSAGE], "task_key": "string", "task_id": "string", "domain": "string", "source": "string",
    "teacher": "string", "score": "float64", "prefix_mode": "string", "source_run": "string",
    "sample_index": "int64", "num_steps": "int64",
}
PAIR_COLUMNS: dict[str, Any] = {"prompt": [MESSAGE], "chosen": [MESSAGE], "rejected": [MESSAGE], "task_key": "string"}


def features(columns: dict[str, Any]) -> Any:
    """`datasets.Features` for a column spec ("string"/"int64"/"float64", or [MESSAGE] for chat lists)."""
    from datasets import Features, List, Value

    out = {}
    for name, kind in columns.items():
        out[name] = List({k: Value(v) for k, v in kind[0].items()}) if isinstance(kind, list) else Value(kind)
    return Features(out)


def canonical_row(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class ArrowSplitWriter:
    """One split as an Arrow IPC stream file (what `datasets.Dataset.from_file` maps), written in batches."""

    def __init__(self, path: Path, columns: dict[str, Any], *, batch: int = 1000):
        import pyarrow as pa

        self.pa = pa
        self.path = path
        self.features = features(columns)
        self.schema = self.features.arrow_schema
        self._writer = pa.ipc.new_stream(str(path), self.schema)
        self._rows: list[dict[str, Any]] = []
        self._batch = batch
        self.count = 0
        self.sha = hashlib.sha256()

    def add(self, row: dict[str, Any]) -> None:
        self.sha.update(canonical_row(row))
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_batch(self.pa.RecordBatch.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def dataset(self) -> Any:
        from datasets import Dataset, DatasetInfo

        if not self.count:
            return Dataset.from_dict({k: [] for k in self.features}, features=self.features)
        return Dataset.from_file(str(self.path), info=DatasetInfo(features=self.features))


# -- export formats ------------------------------------------------------------------------------------------
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt"}


def to_sharegpt(messages: list[dict[str, str]]) -> dict[str, Any]:
    from agentkd.core.messages import OBSERVATION_PREFIX

    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    conv = []
    for i, m in enumerate(messages[1:] if system else messages):
        role = SHAREGPT_ROLES[m["role"]]
        if role == "human" and i > 0 and m["content"].startswith(OBSERVATION_PREFIX):
            role = "observation"
        conv.append({"from": role, "value": m["content"]})
    return {"conversations": conv, "system": system}


def to_axolotl(messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"messages": [{"role": m["role"], "content": m["content"], "train": m["role"] == "assistant"}
                         for m in messages]}


def llamafactory_info(files: dict[str, str]) -> dict[str, Any]:
    """LLaMA-Factory `dataset_info.json` entries for ShareGPT files with observation turns."""
    entry = {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system"},
             "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                      "observation_tag": "observation", "system_tag": "system"}}
    return {name: {"file_name": file, **entry} for name, file in files.items()}


class ExportWriter:
    """The chosen export formats of one split, streamed to DATASET/exports/."""

    def __init__(self, folder: Path, formats: list[str], *, suffix: str = ""):
        folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Path] = {}
        self._fh: dict[str, Any] = {}
        self._first = True
        for fmt in formats:
            name = {"sharegpt": f"sharegpt{suffix}.json", "axolotl": f"axolotl{suffix}.jsonl",
                    "trl": f"trl{suffix}.jsonl"}[fmt]
            self.files[fmt] = folder / name
            self._fh[fmt] = open(folder / name, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if "sharegpt" in self._fh:
            self._fh["sharegpt"].write("[")

    def add(self, messages: list[dict[str, str]]) -> None:
        def dump(obj: Any) -> str:
            return json.dumps(obj, ensure_ascii=False)

        if "sharegpt" in self._fh:
            self._fh["sharegpt"].write(("\n" if self._first else ",\n") + dump(to_sharegpt(messages)))
        if "axolotl" in self._fh:
            self._fh["axolotl"].write(dump(to_axolotl(messages)) + "\n")
        if "trl" in self._fh:
            self._fh["trl"].write(dump({"messages": messages}) + "\n")
        self._first = False

    def close(self) -> None:
        if "sharegpt" in self._fh:
            self._fh["sharegpt"].write("\n]\n")
        for fh in self._fh.values():
            fh.close()
