"""Math answers: extraction, equivalence and a canonical form for voting.

`is_equiv(pred, gold)` decides in three steps, cheapest first:

1. both sides are plain numbers (after dropping `$`, `\\boxed{}`, thousands commas, `\\%`, `^\\circ` and unit
   text such as `\\text{ cm}` or "5 dollars"): compared exactly as fractions, with a tolerance for float
   artefacts (GSM-Hard's 561161.7000000001) and for a prediction rounded to its own decimals; integers
   must match exactly, however large;
2. equal after light LaTeX normalisation (spaces, `\\left`/`\\right`, `\\dfrac`, `\\text{}`);
3. otherwise math-verify (sets, intervals, tuples, symbolic expressions), run in a helper process under a
   per-comparison wall-clock limit (`agentkd.score.mathworker` says why it is not math-verify's own).

Nothing here imports math-verify or sympy; only step 3 starts the helper process.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from agentkd.core.types import Task
from agentkd.score.base import Scorer, ScoreResult
from agentkd.score.qa import golds

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_FINAL = re.compile(r"(?:final\s+answer(?:\s+is)?|the\s+answer\s+is|^\s*answer)\s*[:：]?\s*(.+?)\s*$", re.I | re.M)
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(rf"^(?:{_NUM})$")
_LAST_NUMBER = re.compile(_NUM)
_FRAC = re.compile(r"^([-+]?)\\[dt]?frac\{([-+]?\d+)\}\{([-+]?\d+)\}$|^([-+]?\d+)\s*/\s*([-+]?\d+)$")
# what may follow a number without changing it: unit text, %, degrees, a full stop
# (each alternative starts differently, so the repetition cannot backtrack exponentially on a long tail)
_UNIT_TAIL = re.compile(r"(?:\s*\\(?:text|mbox|mathrm|textrm)\s*\{[^{}]*\}|\s+[A-Za-z]{2,}\.?"
                        r"|\s*\\?%|\s*\^\s*\{?\\circ\}?|\s*\\circ|\s*°)+\s*$")
_MAX_NUMBER_TEXT = 120  # longer text is not "a number and its unit"
_WRAPPERS = re.compile(r"^\$+|\$+$|^\\\(|\\\)$|^\\\[|\\\]$")
_SPACES = re.compile(r"\\[,;:! ]|\\quad|\\qquad|\s+")
_LEFT_RIGHT = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])")
_TEXT = re.compile(r"\\(?:text|mbox|mathrm|textrm|textbf)\s*\{([^{}]*)\}")


def _braced(s: str, start: int) -> str | None:
    """The contents of the {...} group opening at s[start], or None when unbalanced."""
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            depth -= 1
            if depth == 0:
                return s[start + 1:i]
    return None


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (or `\\boxed 5`, `\\fbox{...}`) in `text`."""
    found = None
    for m in _BOXED.finditer(text):
        if m.end() < len(text) and text[m.end()] == "{":
            inner = _braced(text, m.end())
        else:
            inner = re.match(r"[^\s$]*", text[m.end():]).group(0) or None  # type: ignore[union-attr]
        if inner is not None:
            found = inner
    return found


def _clean(s: str) -> str:
    s = s.strip()
    while True:
        t = _WRAPPERS.sub("", s).strip().rstrip(".").strip()
        if t == s:
            return s
        s = t


def _as_text(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, (list, tuple)):  # final_answer([1, -2]): the set/tuple as written in LaTeX answers
        return ", ".join(_as_text(v) for v in value)
    return "" if value is None else str(value)


def answer_text(value: Any) -> str:
    """The answer in a final_answer value: the last `\\boxed{}` if any, else what follows "Final answer:" /
    "The answer is", else the whole text (cleaned of `$`s and a final full stop)."""
    text = _as_text(value)
    boxed = last_boxed(text)
    if boxed is not None:
        return _clean(boxed)
    finals = _FINAL.findall(text)
    if finals:
        return _clean(last_boxed(finals[-1]) or finals[-1])
    return _clean(text)


def extract_answer(text: str) -> str | None:
    """The answer in free model text: `\\boxed{}`, then "Final answer:", then the text if it is a bare number,
    then (GSM8K convention) the last number in it. None when there is nothing to take."""
    if last_boxed(text) is not None or _FINAL.search(text):
        return answer_text(text)
    t = _clean(text)
    if _NUMBER.match(t):
        return t
    nums = _LAST_NUMBER.findall(t)
    return nums[-1].rstrip(".") if nums else None


def parse_number(s: str) -> tuple[Fraction, int | None] | None:
    """A plain number (with unit text dropped) as an exact Fraction and its count of decimals (None when it
    was written as an integer or a fraction), or None when `s` is not one."""
    if len(s) > _MAX_NUMBER_TEXT:
        return None
    s = _UNIT_TAIL.sub("", _clean(s)).replace("\\$", "").replace("$", "").strip()
    s = s[1:] if s.startswith("$") else s
    m = _FRAC.match(s)
    if m:
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else ("", m.group(4), m.group(5))
        if int(den) == 0:
            return None
        frac = Fraction(int(num), int(den))
        return (-frac if sign == "-" else frac), None
    if not _NUMBER.match(s):
        return None
    s = s.replace(",", "")
    try:
        value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    mantissa = s.lower().split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else None
    return value, decimals


def numbers_equal(pred: tuple[Fraction, int | None], gold: tuple[Fraction, int | None]) -> bool:
    (p, p_dec), (g, g_dec) = pred, gold
    if p == g:
        return True
    if p.denominator == 1 and g.denominator == 1:
        return False  # integers match exactly, however large (GSM-Hard: off by one is wrong)
    if math.isclose(float(p), float(g), rel_tol=1e-9, abs_tol=1e-9):
        return True  # float artefacts: 561161.7000000001 vs 561161.7
    # a prediction rounded to its own (at least 2) decimals, against a gold written with more
    if p_dec is not None and p_dec >= 2 and g_dec is not None and g_dec > p_dec:
        exact = Decimal(g.numerator) / Decimal(g.denominator)
        return exact.quantize(Decimal(1).scaleb(-p_dec), ROUND_HALF_UP) == Decimal(p.numerator) / Decimal(p.denominator)
    return False


def _latex_norm(s: str) -> str:
    s = _TEXT.sub(r"\1", _LEFT_RIGHT.sub("", s))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^{\\circ}", "").replace("^\\circ", "")
    return _SPACES.sub("", s).rstrip(".")


def compare(pred: Any, gold: Any, *, timeout_s: float = 5.0) -> tuple[bool, str | None]:
    """(equivalent, note): note is None, "timeout" or "error: ..." (math-verify could not decide)."""
    g = answer_text(gold)
    p = answer_text(pred)
    if not p or not g:
        return False, None
    gn, pn = parse_number(g), parse_number(p)
    if gn is not None and pn is not None:
        return numbers_equal(pn, gn), None
    if _latex_norm(p) == _latex_norm(g):
        return True, None
    from agentkd.score.mathworker import worker

    return worker().compare(g, p, timeout_s)


def is_equiv(pred: Any, gold: Any, *, timeout_s: float = 5.0) -> bool:
    """True when the predicted answer equals the gold (a list of gold aliases: any of them)."""
    return any(compare(pred, g, timeout_s=timeout_s)[0] for g in golds(gold))


def canonical(value: Any) -> str:
    """A normal form for voting: equal strings for equivalent simple answers (4, "4.0", "\\boxed{4}", "$4$";
    "1/2", "\\frac{1}{2}", "0.5"); anything else its normalised LaTeX. No math-verify: fast, in-process."""
    text = answer_text(value)
    num = parse_number(text)
    if num is not None:
        v = num[0]
        return str(v.numerator) if v.denominator == 1 else format(float(v), ".12g")
    return _latex_norm(text)


class MathScorer(Scorer):
    """math-verify equivalence; `correct` is 1.0 when equivalent."""

    name = "math_equiv"
    timeout_s = 5.0

    def score(self, prediction: Any, task: Task) -> ScoreResult:
        aliases = golds(task.answer)
        if not aliases:
            return ScoreResult(correct=None, scorer=self.name, reason="no gold answer")
        notes = []
        for g in aliases:
            eq, note = compare(prediction, g, timeout_s=self.timeout_s)
            if eq:
                return ScoreResult(correct=1.0, metrics={"equiv": 1.0}, scorer=self.name)
            if note:
                notes.append(note)
        reason = f"math-verify: {notes[0]} (scored wrong)" if notes else None
        return ScoreResult(correct=0.0, metrics={"equiv": 0.0}, scorer=self.name, reason=reason)
