"""Loss-mask verification: render a curated dataset exactly as TRL's `SFTTrainer(assistant_only_loss=True)` will,
and fail loudly when the mask is wrong.

TRL tokenises each conversation with `apply_chat_template(messages, tokenize=True, return_dict=True,
return_assistant_tokens_mask=True, chat_template=..., tools=None)`, sets labels to -100 where `assistant_masks`
is 0, truncates to `max_length` keeping the start (`truncation_mode="keep_start"`), and silently drops examples
left with no trained token. `check_masks` makes the same call (batched: the same render and the same tokenizer
call per conversation), applies the same truncation, then maps the trained tokens' character offsets back onto
the rendered text and checks them against where each message's content sits:

- every trained character lies in an assistant message's content, the whitespace right before it, or the
  end-of-turn tokens (and whitespace) right after it. End-of-turn tokens are the added tokens the template puts
  right after a user/system turn's content (ChatML `<|im_end|>`, Llama 3 `<|eot_id|>`, Gemma `<end_of_turn>`,
  Phi-3 `<|end|>`), plus the tokenizer's eos token;
- every assistant content character inside the length cap is trained, and so is its end-of-turn token (else the
  model never learns to stop);
- every example trains at least one token (a long prompt can push all assistant turns past `max_length`).

A violation raises `MaskError` (exit 2) naming the dataset, split and example index. Known limit: message
contents are located by searching the rendered text in order, so a template that rewrites a message's text
(beyond trimming it) cannot be checked and is reported as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agentkd.curate.templates import MaskError, check_markers, load_student_tokenizer, template_source

__all__ = ["TRAINED_CLOSE", "TRAINED_OPEN", "MaskError", "MaskReport", "check_masks", "format_report"]

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"  # plain-text markers around trained spans in `MaskReport.example`


class MaskReport(BaseModel):
    """What `check_masks` found: token counts and one example with its trained spans shown."""

    dataset: str = Field(description="The DATASET folder (or `<dataset>` for an in-memory one).")
    split: str = Field(description="The split checked.")
    model: str = Field(description="The student model spec whose tokenizer rendered the examples.")
    template: str = Field(description="Where the training chat template came from (e.g. trl:qwen2_5_training.jinja).")
    max_length: int | None = Field(description="The length cap applied (TRL keep_start truncation); None: none.")
    examples: int = Field(description="Examples checked.")
    trained_tokens: int = Field(description="Tokens with a loss (assistant content + end-of-turn), after truncation.")
    total_tokens: int = Field(description="All tokens after truncation.")
    trained_share: float = Field(description="trained_tokens / total_tokens.")
    truncated: int = Field(description="Examples longer than max_length (cut; their tail is not trained).")
    example_index: int = Field(description="Index of the example shown.")
    example: str = Field(description=f"That example's rendered text, trained spans in {TRAINED_OPEN}…{TRAINED_CLOSE}.")
    example_spans: list[tuple[str, bool]] = Field(description="The same text as (text, trained) pieces.")
    input_ids: list[list[int]] | None = Field(None, repr=False, description="Per example, the token ids after "
                                              "truncation (only with keep_tokens=True).")
    masks: list[list[int]] | None = Field(None, repr=False, description="Per example, 1 where the token is trained "
                                          "(TRL: labels != -100), after truncation (only with keep_tokens=True).")


# ---------------------------------------------------------------------------------------------------------------
# where each message sits in the rendered text

def _role(message: dict) -> str:
    role = message.get("role", "?")
    content = message.get("content")
    if role == "user" and isinstance(content, str) and content.startswith("Observation:"):
        return "observation"
    return role


def end_of_turn_pattern(tokenizer) -> re.Pattern:
    """Regex matching the template's end-of-turn token(s) (see the module doc), learnt from a probe render."""
    added = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
    probe = [{"role": "system", "content": "agentkd-probe-s"}, {"role": "user", "content": "agentkd-probe-u"},
             {"role": "assistant", "content": "agentkd-probe-a"}, {"role": "user", "content": "agentkd-probe-v"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False)
    eot = {tokenizer.eos_token} if tokenizer.eos_token else set()
    for marker in ("agentkd-probe-s", "agentkd-probe-u", "agentkd-probe-v"):
        at = text.find(marker)
        if at < 0:
            continue
        rest = text[at + len(marker):].lstrip()
        hit = next((tok for tok in added if rest.startswith(tok)), None)
        if hit:
            eot.add(hit)
    eot.discard("")
    if not eot:
        return re.compile(r"(?!)")
    return re.compile("|".join(re.escape(t) for t in sorted(eot, key=len, reverse=True)))


class _Regions:
    """Character regions of one rendered conversation: where training is allowed / required."""

    def __init__(self, text: str, messages: list[dict], eot: re.Pattern, where: str):
        self.allowed: list[tuple[int, int]] = []  # assistant turns: lead whitespace + content + end-of-turn
        self.content: list[tuple[int, int, int]] = []  # (message index, start, end) of assistant content
        self.eot: list[tuple[int, int, int]] = []  # (message index, start, end) of each assistant end-of-turn
        self.spans: list[tuple[int, int, int]] = []  # (message index, from, to): the text each message owns
        trail = re.compile(r"(?:\s|" + eot.pattern + r")*")
        first_eot = re.compile(r"\s*(" + eot.pattern + r")")
        cursor = 0
        for j, m in enumerate(messages):
            content = m.get("content")
            if not isinstance(content, str) or content == "":
                if m.get("role") == "assistant":
                    raise MaskError(f"{where}: message {j} (assistant) has no text content")
                continue
            pos = text.find(content, cursor)
            if pos < 0:
                content = content.strip()
                pos = text.find(content, cursor) if content else -1
            if pos < 0:
                raise MaskError(f"{where}: the chat template changes the text of message {j} ({_role(m)}), so "
                                "its tokens cannot be told apart; check the template")
            end = pos + len(content)
            self.spans.append((j, cursor, end))
            if m.get("role") == "assistant":
                lead = pos
                while lead > cursor and text[lead - 1].isspace():
                    lead -= 1
                self.allowed.append((lead, trail.match(text, end).end()))
                self.content.append((j, pos, end))
                if hit := first_eot.match(text, end):
                    self.eot.append((j, hit.start(1), hit.end(1)))
            cursor = end

    def owner(self, char: int, messages: list[dict]) -> str:
        for j, lo, hi in self.spans:
            if lo <= char < hi:
                return f"the {_role(messages[j])} message {j}"
        return "the template's own text (headers, default system prompt)"


# ---------------------------------------------------------------------------------------------------------------
# the check

def _open(dataset: Any, split: str) -> tuple[Any, str]:
    if not isinstance(dataset, (str, Path)):
        return dataset, "<dataset>"
    from datasets import Dataset, load_from_disk

    path = Path(dataset)
    if not path.exists():
        raise MaskError(f"{path}: no such dataset folder")
    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as e:
        raise MaskError(f"{path}: not a saved dataset ({e})") from e
    if isinstance(loaded, Dataset):
        return loaded, str(path)
    if split not in loaded:
        raise MaskError(f"{path}: no split {split!r} (has: {', '.join(loaded)})")
    return loaded[split], str(path)


def _batches(ds, batch_size: int) -> Iterator[list[list[dict]]]:
    if "messages" not in (ds.column_names or []):
        raise MaskError(f"the dataset has no `messages` column (columns: {', '.join(ds.column_names or [])})")
    for batch in ds.select_columns(["messages"]).iter(batch_size=batch_size):
        yield batch["messages"]


def _runs(mask) -> list[tuple[int, int]]:
    """(first, last) token index of each run of 1s."""
    import numpy as np

    m = np.concatenate(([0], np.asarray(mask, dtype=np.int8), [0]))
    edges = np.flatnonzero(np.diff(m))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _check_example(where: str, text: str, messages: list[dict], encoding, mask: list[int], n_keep: int,
                   eot: re.Pattern, max_length: int | None) -> tuple[int, list[tuple[int, int]]]:
    """Check one example; returns (trained tokens, trained char spans). Raises MaskError on a wrong mask."""
    import numpy as np

    mask = mask[:n_keep]
    runs = _runs(mask)
    regions = _Regions(text, messages, eot, where)
    offsets = encoding.offsets
    window = offsets[n_keep - 1][1] if n_keep else 0
    trained_chars = [(offsets[a][0], offsets[b][1]) for a, b in runs]
    if not runs:
        if not regions.content:
            raise MaskError(f"{where}: trains zero tokens: it has no assistant message")
        if max_length is not None and regions.content[0][1] >= window:
            first = encoding.char_to_token(regions.content[0][1])
            raise MaskError(f"{where}: trains zero tokens: max_length={max_length} cuts off every assistant turn "
                            f"(the first starts at token {first}); TRL would silently drop it")
        raise MaskError(f"{where}: trains zero tokens: the chat template marks no assistant token")
    trained = np.zeros(len(text) + 1, dtype=bool)
    for lo, hi in trained_chars:
        trained[lo:hi] = True
    allowed = np.zeros(len(text) + 1, dtype=bool)
    for lo, hi in regions.allowed:
        allowed[lo:hi] = True
    bad = np.flatnonzero(trained & ~allowed)
    if bad.size:
        at = int(bad[0])
        tokens = sum(1 for a, b in runs for t in range(a, b + 1)
                     if (np.any(~allowed[offsets[t][0]:offsets[t][1]])) and offsets[t][1] > offsets[t][0])
        raise MaskError(f"{where}: trains {tokens} token(s) outside the assistant turns, first in "
                        f"{regions.owner(at, messages)} ({text[at:at + 30]!r})")
    for j, lo, hi in regions.content:
        hi = min(hi, window)
        if lo < hi and not trained[lo:hi].all():
            at = lo + int(np.flatnonzero(~trained[lo:hi])[0])
            raise MaskError(f"{where}: assistant message {j} is not fully trained (masked from "
                            f"{text[at:at + 30]!r})")
    for j, lo, hi in regions.eot:
        if hi <= window and not trained[lo:hi].all():
            raise MaskError(f"{where}: the end-of-turn token {text[lo:hi]!r} after assistant message {j} is not "
                            "trained, so the model would not learn to stop; fix the template's generation block")
    return int(sum(b - a + 1 for a, b in runs)), trained_chars


def _pieces(text: str, trained_chars: list[tuple[int, int]], end: int) -> list[tuple[str, bool]]:
    out, at = [], 0
    for lo, hi in trained_chars:
        if lo > at:
            out.append((text[at:lo], False))
        out.append((text[lo:hi], True))
        at = hi
    if at < end:
        out.append((text[at:end], False))
    return out


def plain_marked(pieces: Iterable[tuple[str, bool]]) -> str:
    """The text with trained pieces in ⟦…⟧."""
    return "".join(f"{TRAINED_OPEN}{t}{TRAINED_CLOSE}" if on else t for t, on in pieces)


def check_masks(dataset: Any, model: str, *, split: str = "train", template: str | None = None,
                max_length: int | None = None, batch_size: int = 256, show: int = 0, progress: bool = False,
                tokenizer=None, keep_tokens: bool = False) -> MaskReport:
    """Render every example of `dataset` (a DATASET folder or a `datasets.Dataset`) with `model`'s training template
    like TRL's SFTTrainer(assistant_only_loss=True, max_length=max_length) and check the loss mask (module doc).
    `template`: see `agentkd.curate.templates.resolve_template`; `tokenizer`: one from `load_student_tokenizer`
    (skips loading). `show`: index of the example put in the report; `keep_tokens`: also return every example's
    ids and mask (tests compare them with TRL's). Raises MaskError on the first bad example."""
    if tokenizer is None:
        tokenizer = load_student_tokenizer(model, template)
    else:
        from agentkd.curate.templates import TrainingTemplate

        check_markers(TrainingTemplate(tokenizer.chat_template or "", template_source(tokenizer)), tokenizer,
                      model=model)
    ds, name = _open(dataset, split)
    eot = end_of_turn_pattern(tokenizer)
    n_examples = trained_total = tokens_total = truncated = 0
    pieces: list[tuple[str, bool]] = []
    kept_ids: list[list[int]] | None = [] if keep_tokens else None
    kept_masks: list[list[int]] | None = [] if keep_tokens else None
    bar = _progress(progress)
    with bar:
        task = bar.add_task(f"checking masks ({name}[{split}])", total=len(ds) if hasattr(ds, "__len__") else None)
        for batch in _batches(ds, batch_size):
            # the call TRL's tokenize_fn makes per example (here for a batch of conversations at once)
            out = tokenizer.apply_chat_template(batch, tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=True, tools=None)
            texts = tokenizer.apply_chat_template(batch, tokenize=False, tools=None)
            for k, messages in enumerate(batch):
                i = n_examples + k
                n = len(out["input_ids"][k])
                n_keep = n if max_length is None else min(n, max_length)
                truncated += n_keep < n
                trained, chars = _check_example(f"{name}[{split}][{i}]", texts[k], messages, out.encodings[k],
                                                out["assistant_masks"][k], n_keep, eot, max_length)
                trained_total += trained
                if kept_ids is not None and kept_masks is not None:
                    kept_ids.append(list(out["input_ids"][k][:n_keep]))
                    kept_masks.append(list(out["assistant_masks"][k][:n_keep]))
                tokens_total += n_keep
                if i == show:
                    end = out.encodings[k].offsets[n_keep - 1][1] if n_keep else 0
                    pieces = _pieces(texts[k], chars, end)
            n_examples += len(batch)
            bar.update(task, advance=len(batch))
    if n_examples == 0:
        raise MaskError(f"{name}[{split}]: no examples")
    return MaskReport(dataset=name, split=split, model=model, template=template_source(tokenizer),
                      max_length=max_length, examples=n_examples, trained_tokens=trained_total,
                      total_tokens=tokens_total, trained_share=trained_total / max(tokens_total, 1),
                      truncated=truncated, example_index=min(show, n_examples - 1), example=plain_marked(pieces),
                      example_spans=pieces, input_ids=kept_ids, masks=kept_masks)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=True)


def format_report(report: MaskReport) -> str:
    """The report as plain text (summary lines, then the example with trained spans in ⟦…⟧)."""
    cap = f", max_length {report.max_length} ({report.truncated} truncated)" if report.max_length else ""
    return (f"{report.dataset}[{report.split}]: {report.examples} examples OK with {report.model} "
            f"({report.template}{cap})\n"
            f"trained tokens: {report.trained_tokens} / {report.total_tokens} = {report.trained_share:.1%}\n"
            f"example {report.example_index} (trained spans in {TRAINED_OPEN}…{TRAINED_CLOSE}):\n{report.example}")
