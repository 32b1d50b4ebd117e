"""Factual-QA metrics: exact match, token F1 and cover match over HotpotQA/SQuAD-normalised answers.

Normalisation is the one the official HotpotQA and SQuAD evaluation scripts use: lower-case, drop
punctuation, drop the articles a/an/the, collapse whitespace. F1 follows HotpotQA's rule that a yes/no/
noanswer answer on either side scores 0 unless both sides are the same such answer.

`gold` may be a string, a number or a list of aliases; every metric takes the best alias. Pure Python
with precompiled tables: this is the hot path when tens of thousands of trajectories are scored.
"""

from __future__ import annotations

import re
import string
from typing import Any

from agentkd.core.types import Task
from agentkd.score.base import Scorer, ScoreResult

_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_SPECIAL = frozenset(("yes", "no", "noanswer"))


def as_text(value: Any) -> str:
    """An answer value as text: None → "", an integral float → its integer digits (1990.0 → "1990", which
    normalisation would otherwise turn into "19900"), lists joined with ", ", anything else str()."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(as_text(v) for v in value)
    return str(value)


def normalize_answer(s: str) -> str:
    """Official HotpotQA/SQuAD normalisation: lower-case, no punctuation, no a/an/the, single spaces."""
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_PUNCT)).split())


def golds(gold: Any) -> list[str]:
    """The gold answer's aliases as text (a str or number is one alias; None, "" or [] is none)."""
    if isinstance(gold, str):  # the common case, without the generic path's overhead
        return [gold] if gold.strip() else []
    items = gold if isinstance(gold, (list, tuple)) else [gold]
    return [t for t in (as_text(g) for g in items if g is not None) if t.strip()]


def _em(p: str, g: str) -> float:
    return 1.0 if p == g else 0.0


def _f1(p: str, g: str) -> float:
    if p != g and (p in _SPECIAL or g in _SPECIAL):
        return 0.0
    pt, gt = p.split(), g.split()
    if not pt or not gt:
        return 1.0 if pt == gt else 0.0
    left: dict[str, int] = {}  # a plain dict, not Counter &: a third of the time on short answers
    for t in gt:
        left[t] = left.get(t, 0) + 1
    same = 0
    for t in pt:
        n = left.get(t)
        if n:
            left[t] = n - 1
            same += 1
    if same == 0:
        return 0.0
    precision, recall = same / len(pt), same / len(gt)
    return 2 * precision * recall / (precision + recall)


def _cover(p: str, g: str) -> float:
    # whole tokens, not raw substrings: gold "1" must not be "covered" by a prediction of "1990"
    return 1.0 if g and f" {g} " in f" {p} " else 0.0


def _best(metric, pred: Any, gold: Any) -> float:
    p = normalize_answer(as_text(pred))
    return max((metric(p, normalize_answer(g)) for g in golds(gold)), default=0.0)


def exact_match(pred: Any, gold: Any) -> float:
    """1.0 when the normalised prediction equals a normalised gold alias."""
    return _best(_em, pred, gold)


def f1(pred: Any, gold: Any) -> float:
    """Token-level F1 against the best gold alias (HotpotQA's yes/no/noanswer rule)."""
    return _best(_f1, pred, gold)


def cover_match(pred: Any, gold: Any) -> float:
    """1.0 when a normalised gold alias occurs, as whole tokens, in the normalised prediction."""
    return _best(_cover, pred, gold)


def qa_metrics(pred: Any, gold: Any) -> dict[str, float]:
    """em, f1 and cover in one pass (each the best over the aliases, normalising everything once)."""
    return _metrics(pred, golds(gold))


def _metrics(pred: Any, aliases: list[str]) -> dict[str, float]:
    p = normalize_answer(as_text(pred))
    gs = [normalize_answer(g) for g in aliases]
    return {"em": max((_em(p, g) for g in gs), default=0.0),
            "f1": max((_f1(p, g) for g in gs), default=0.0),
            "cover": max((_cover(p, g) for g in gs), default=0.0)}


class QAScorer(Scorer):
    """Exact match / F1 / cover match; `correct` is exact match."""

    name = "qa_em_f1"

    def score(self, prediction: Any, task: Task) -> ScoreResult:
        aliases = golds(task.answer)
        if not aliases:
            return ScoreResult(correct=None, scorer=self.name, reason="no gold answer")
        m = _metrics(prediction, aliases)
        return ScoreResult(correct=m["em"], metrics=m, scorer=self.name)
