"""Curation filters: what keeps a trajectory out of the SFT splits, in the order they apply.

    infra_error   status "error" (a model/sandbox failure, not an answer)
    unscorable    the scorer could not score it (no gold answer, ...): neither kept nor rejected, only counted
    incorrect     scored wrong: goes to the `rejected` split (and DPO pairs) instead
    parse_error   a step whose output had no parsable code action
    max_steps     never called final_answer() within the step limit
    exec_error    a code action raised (only with keep_recovered=False; by default recovered episodes stay)
    length_cap    the rendered chat is longer than max_tokens student tokens
    duplicate     same task and same normalised code-action sequence as a kept one   (agentkd.curate.dedupe)
    near_duplicate  code actions nearly the same as a kept one's, across tasks        (optional)
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from agentkd.core.types import Trajectory

FILTERS = ("infra_error", "unscorable", "incorrect", "parse_error", "max_steps", "exec_error", "length_cap",
           "duplicate", "near_duplicate")
STRUCTURAL = ("parse_error", "max_steps", "exec_error")


def has_parse_error(traj: Trajectory) -> bool:
    return any(s.code is None and not s.is_final for s in traj.steps)


def has_exec_error(traj: Trajectory) -> bool:
    return any(s.code is not None and s.error for s in traj.steps)


def classify(traj: Trajectory, correct: float | None, *, keep_recovered: bool = True) -> str | None:
    """The first filter (see FILTERS) that removes `traj` from the SFT pool before the length cap, or None.
    `correct`: the score (None = unscorable)."""
    if traj.status == "error":
        return "infra_error"
    if correct is None:
        return "unscorable"
    if correct < 1.0:
        return "incorrect"
    if has_parse_error(traj):
        return "parse_error"
    if traj.status == "max_steps":
        return "max_steps"
    if not keep_recovered and has_exec_error(traj):
        return "exec_error"
    return None


_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*\(")


def tool_calls(traj: Trajectory, counts: Counter) -> None:
    """Add to `counts` how often the code actions call each of the trajectory's tools (by name)."""
    names = set(traj.provenance.tools) or {"final_answer"}
    for s in traj.steps:
        if s.code:
            for name in _CALL.findall(s.code):
                if name in names:
                    counts[name] += 1


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")


class TokenCounter:
    """Token lengths of rendered chats in the student's tokenizer (its chat template, batched encoding)."""

    def __init__(self, student: str):
        from transformers import AutoTokenizer

        from agentkd.curate.read import CurateError
        from agentkd.models.load import local_path_for

        path = local_path_for(student, progress=False)
        if path is None or not path.exists():
            raise CurateError(f"curate.student: {student!r} is not a local or embedded model (embedded:NAME, "
                              "local:PATH or a folder)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.template = self.tokenizer.chat_template or CHATML
        self._head_text: dict[str, str | None] = {}  # system content -> its rendered turn (None: not cacheable)
        self._heads: dict[str, int] = {}  # rendered system turn -> its token count

    def count(self, chats: list[list[dict[str, Any]]]) -> list[int]:
        """Tokens of each chat as `apply_chat_template` renders it. The system turn (the same long student
        prompt in every chat) is tokenized once: when the rendered chat starts with the rendered system turn
        and that ends on a special token, no token spans the cut, so the two counts add up exactly."""
        if not chats:
            return []
        tok = self.tokenizer
        texts = tok.apply_chat_template(chats, chat_template=self.template, tokenize=False)
        heads = [self._head(c) for c in chats]
        rest = [t[len(h):] if h and t.startswith(h) else t for t, h in zip(texts, heads, strict=True)]
        ids = tok(rest, add_special_tokens=False)["input_ids"]
        return [len(x) + (self._heads[h] if h and t.startswith(h) else 0)
                for x, t, h in zip(ids, texts, heads, strict=True)]

    def _head(self, chat: list[dict[str, Any]]) -> str | None:
        """The rendered first turn when it is a system turn that ends on a special token (else None)."""
        if not chat or chat[0].get("role") != "system":
            return None
        key = chat[0]["content"]
        if key not in self._head_text:
            text = self.tokenizer.apply_chat_template([chat[0]], chat_template=self.template, tokenize=False)
            stripped = text.rstrip()
            ok = any(stripped.endswith(t) for t in self.tokenizer.all_special_tokens if t)
            self._head_text[key] = stripped if ok else None
            if ok and stripped not in self._heads:
                self._heads[stripped] = len(self.tokenizer(stripped, add_special_tokens=False)["input_ids"])
        return self._head_text[key]
