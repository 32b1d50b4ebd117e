"""Plain records shared by the retrieval modules."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    score: float
    id: str
    title: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retriever(Protocol):
    """Anything that answers `search(query, k) -> list[Hit]` (local indexes, the server client)."""

    def search(self, query: str, k: int = 3, mode: str | None = None) -> list[Hit]: ...

    def fingerprint(self) -> dict[str, Any]: ...
