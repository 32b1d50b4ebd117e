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

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
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
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception:  # templates that refuse a system message (Gemma 1/2)
        text = tokenizer.apply_chat_template(probe[1:], tokenize=False)
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
        self.spans: list[tuple[int, int, int, int]] = []  # (message index, header from, content from, content to)
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
            self.spans.append((j, cursor, pos, end))
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
        for j, lo, start, hi in self.spans:
            if start <= char < hi:
                return f"the {_role(messages[j])} message {j}"
            if lo <= char < start:
                return f"the template's text before the {_role(messages[j])} message {j} (its header)"
        return "the template's own text after the last message"


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


@dataclass
class _Tally:
    """What a run of examples added up to (merged across worker processes)."""

    examples: int = 0
    trained: int = 0
    tokens: int = 0
    truncated: int = 0
    pieces: list[tuple[str, bool]] = field(default_factory=list)
    ids: list[list[int]] | None = None
    masks: list[list[int]] | None = None

    def add(self, other: _Tally) -> None:
        self.examples += other.examples
        self.trained += other.trained
        self.tokens += other.tokens
        self.truncated += other.truncated
        self.pieces = self.pieces or other.pieces
        if self.ids is not None and self.masks is not None:
            self.ids += other.ids or []
            self.masks += other.masks or []


@dataclass
class _Job:
    tokenizer: Any
    eot: re.Pattern
    where: str
    max_length: int | None
    show: int
    keep_tokens: bool


def _check_batch(job: _Job, batch: list[list[dict]], first: int) -> _Tally:
    tally = _Tally(ids=[] if job.keep_tokens else None, masks=[] if job.keep_tokens else None)
    # the call TRL's tokenize_fn makes per example (here for a batch of conversations at once)
    out = job.tokenizer.apply_chat_template(batch, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True, tools=None)
    texts = job.tokenizer.apply_chat_template(batch, tokenize=False, tools=None)
    for k, messages in enumerate(batch):
        i = first + k
        n = len(out["input_ids"][k])
        n_keep = n if job.max_length is None else min(n, job.max_length)
        trained, chars = _check_example(f"{job.where}[{i}]", texts[k], messages, out.encodings[k],
                                        out["assistant_masks"][k], n_keep, job.eot, job.max_length)
        tally.examples += 1
        tally.trained += trained
        tally.tokens += n_keep
        tally.truncated += n_keep < n
        if tally.ids is not None and tally.masks is not None:
            tally.ids.append(list(out["input_ids"][k][:n_keep]))
            tally.masks.append(list(out["assistant_masks"][k][:n_keep]))
        if i == job.show:
            end = out.encodings[k].offsets[n_keep - 1][1] if n_keep else 0
            tally.pieces = _pieces(texts[k], chars, end)
    return tally


_WORKER: tuple[_Job, Any, int] | None = None  # (job, dataset, batch size), inherited by forked workers


def _check_shard(bounds: tuple[int, int]) -> _Tally:
    assert _WORKER is not None
    job, ds, batch_size = _WORKER
    lo, hi = bounds
    tally = _Tally(ids=[] if job.keep_tokens else None, masks=[] if job.keep_tokens else None)
    for batch in _batches(ds.select(range(lo, hi)), batch_size):
        tally.add(_check_batch(job, batch, lo + tally.examples))
    return tally


def check_masks(dataset: Any, model: str, *, split: str = "train", template: str | None = None,
                max_length: int | None = None, batch_size: int = 256, show: int = 0, progress: bool = False,
                tokenizer=None, keep_tokens: bool = False, num_proc: int | None = None) -> MaskReport:
    """Render every example of `dataset` (a DATASET folder or a `datasets.Dataset`) with `model`'s training template
    like TRL's SFTTrainer(assistant_only_loss=True, max_length=max_length) and check the loss mask (module doc).
    `template`: see `agentkd.curate.templates.resolve_template`; `tokenizer`: one from `load_student_tokenizer`
    (skips loading). `show`: index of the example put in the report; `keep_tokens`: also return every example's
    ids and mask (tests compare them with TRL's); `num_proc`: worker processes (forked; each streams its own
    slice of the memory-mapped dataset). Raises MaskError on the first bad example (lowest index)."""
    global _WORKER
    if tokenizer is None:
        tokenizer = load_student_tokenizer(model, template)
    else:
        from agentkd.curate.templates import TrainingTemplate

        check_markers(TrainingTemplate(tokenizer.chat_template or "", template_source(tokenizer)), tokenizer,
                      model=model)
    ds, name = _open(dataset, split)
    job = _Job(tokenizer, end_of_turn_pattern(tokenizer), f"{name}[{split}]", max_length, show, keep_tokens)
    total = _Tally(ids=[] if keep_tokens else None, masks=[] if keep_tokens else None)
    size = len(ds) if hasattr(ds, "__len__") else None
    with _progress(progress) as bar:
        task = bar.add_task(f"checking masks ({name}[{split}])", total=size)
        if num_proc and num_proc > 1 and size and size > batch_size:
            import multiprocessing

            _batches(ds, batch_size)  # (checks the column before forking)
            shard = max(batch_size, -(-size // (num_proc * 8)))
            _WORKER = (job, ds, batch_size)
            env = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one Rust thread per worker, and no fork warning
            try:
                with multiprocessing.get_context("fork").Pool(num_proc) as pool:
                    for part in pool.imap(_check_shard, [(lo, min(lo + shard, size)) for lo in range(0, size, shard)]):
                        total.add(part)
                        bar.update(task, advance=part.examples)
            finally:
                _WORKER = None
                if env is None:
                    os.environ.pop("TOKENIZERS_PARALLELISM", None)
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = env
        else:
            for batch in _batches(ds, batch_size):
                part = _check_batch(job, batch, total.examples)
                total.add(part)
                bar.update(task, advance=part.examples)
    if total.examples == 0:
        raise MaskError(f"{name}[{split}]: no examples")
    return MaskReport(dataset=name, split=split, model=model, template=template_source(tokenizer),
                      max_length=max_length, examples=total.examples, trained_tokens=total.trained,
                      total_tokens=total.tokens, trained_share=total.trained / max(total.tokens, 1),
                      truncated=total.truncated, example_index=min(show, total.examples - 1),
                      example=plain_marked(total.pieces), example_spans=total.pieces, input_ids=total.ids,
                      masks=total.masks)


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
