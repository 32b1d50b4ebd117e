"""Parsing a CodeAct action: `Thought: ...` then a ```py code block (ending with <end_code>)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_CODE = re.compile(r"```(?:py|python|python3)?[ \t]*\n(.*?)(?:\n)?```", re.S)
_OPEN = re.compile(r"```(?:py|python|python3)?[ \t]*\n(.*)$", re.S)


@dataclass
class Action:
    thought: str | None
    code: str | None
    error: str | None = None


def parse_action(text: str) -> Action:
    """Split model output into thought and code. All complete code blocks are joined; a block left open
    at the end (the model stopped on the end-code marker before closing it) is accepted too."""
    thought_part = text.split("```", 1)[0]
    thought = re.sub(r"^\s*Thought:\s*", "", thought_part.strip())
    thought = re.sub(r"\s*Code:\s*$", "", thought).strip() or None
    blocks = [b.strip("\n") for b in _CODE.findall(text)]
    if not blocks and (m := _OPEN.search(text)):
        blocks = [m.group(1).replace("<end_code>", "").rstrip()]
    code = "\n\n".join(b for b in blocks if b.strip())
    if not code:
        return Action(thought, None, "no code block found")
    return Action(thought, code)


FORMAT_HELP = (
    "Error: your reply had no code block. Reply with 'Thought:' and then a code block:\n"
    "Code:\n```py\n# your code\n```<end_code>\n"
    "Call final_answer(...) in a code block when you know the answer."
)


def parse_final_reply(text: str) -> str:
    """The answer in a plain-text reply ('Final answer: X', 'Answer: X', or \\boxed{X}); else the last line."""
    if m := re.search(r"(?:final answer|answer)\s*[:：]\s*(.+)", text, re.I):
        return m.group(1).strip().rstrip(".")
    if boxed := last_boxed(text):
        return boxed
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (balanced braces)."""
    i = text.rfind("\\boxed{")
    if i < 0:
        return None
    depth, start = 0, i + len("\\boxed{")
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            if depth == 0:
                return text[start:j].strip()
            depth -= 1
    return None


def first_paragraph(text: str) -> str:
    """The first non-empty paragraph (up to the first blank line) of a chain-of-thought answer."""
    for para in re.split(r"\n\s*\n", text.strip()):
        if para.strip():
            return para.strip()
    return ""
