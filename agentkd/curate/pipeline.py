"""`curate(config)`: run folders → a curated dataset folder, streaming (never all trajectories in memory).

    score   trajectories without a score are scored (agentkd.score.run.score_run, no judge) into the run's
            scores.jsonl sidecar; anything still unscored is scored in memory
    pass 1  each run is read line by line: filters (agentkd.curate.filters, in order), the student rendering,
            batched token counts in the student's tokenizer, dedupe; what survives is kept as
            (run, byte offset, length) plus a few numbers for the card
    split   tasks (not trajectories) go to train or validation by a seeded hash of the task key
    pass 2  the kept lines are re-read by offset and written as Arrow splits, pairs and exports into
            DATASET.tmp-…, saved as DatasetDicts, carded, and renamed into place in one step
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkd.core.types import Trajectory
from agentkd.curate.config import CurateConfig
from agentkd.curate.filters import FILTERS, STRUCTURAL, TokenCounter, classify, tool_calls
from agentkd.curate.read import CurateError, LineReader, RunInfo, iter_run, open_run
from agentkd.curate.render import DEFAULT_MAX_STEPS, student_messages, tools_text_for

log = logging.getLogger(__name__)
Ref = tuple[int, int, int]  # (run index, byte offset, byte length)


class _Clock:
    """Wall and CPU seconds per phase (CPU time says what a phase costs when other processes share the cores)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._t: dict[str, tuple[float, float]] = {}

    def start(self, name: str) -> None:
        self._t[name] = (time.perf_counter(), time.process_time())

    def stop(self, name: str) -> None:
        w, c = self._t.pop(name)
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c

    def move(self, src: str, dst: str, wall: float, cpu: float) -> None:
        self.wall[src] -= wall
        self.cpu[src] -= cpu
        self.wall[dst] = self.wall.get(dst, 0.0) + wall
        self.cpu[dst] = self.cpu.get(dst, 0.0) + cpu

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)


@dataclass
class CurateResult:
    out: Path
    card: dict[str, Any]
    timings: dict[str, Any] = field(default_factory=dict)  # seconds per phase (score, filter, dedupe, export; score_runs)

    @property
    def trajectories(self) -> int:
        return self.card["input"]["trajectories"]


# -- scoring ---------------------------------------------------------------------------------------------
def _scores(run: RunInfo, cfg: CurateConfig) -> dict[tuple[str, int], tuple[float | None, str | None]]:
    """key → (correct, reason), after scoring what has no score yet (when cfg.score)."""
    from agentkd.core.errors import AgentkdError
    from agentkd.score.store import read_score_records

    if cfg.score:
        try:
            from agentkd.score.run import score_run
        except ImportError:  # the score stage's runner is not there: pass 1 scores in memory
            score_run = None
        if score_run is not None:
            try:
                score_run(run.path, scorer=cfg.scorer, judge=None, progress=False)
            except AgentkdError:
                raise
            except Exception as e:  # a bad line it could not read: pass 1 names it; score in memory meanwhile
                log.warning("%s: score_run failed (%s); scoring in memory", run.path, str(e).splitlines()[0])
    return {k: (o.get("correct"), o.get("reason")) for k, o in read_score_records(run.path).items()}


# -- pass 1 ----------------------------------------------------------------------------------------------
class _Selection:
    """What pass 1 keeps: refs of SFT rows and rejected rows, pair candidates, and the card's numbers."""

    def __init__(self, cfg: CurateConfig, counter: TokenCounter | None):
        from agentkd.curate.dedupe import ExactDeduper, NearDeduper

        self.cfg = cfg
        self.counter = counter
        self.removed = dict.fromkeys(FILTERS, 0)
        self.inputs = 0
        self.by = {k: (Counter(), Counter()) for k in ("domain", "source", "teacher")}  # (input, kept)
        self.unscorable: Counter = Counter()
        self.sft: list[tuple[Ref, str, float]] = []  # (ref, task key, score)
        self.rejected: list[tuple[Ref, float]] = []
        self.rejected_length_cap = 0
        self.pair_refs: dict[str, tuple[list[Ref], list[Ref]]] = {}
        self.steps = array("i")
        self.tokens = array("i")
        self.tool_calls: Counter = Counter()
        self.cost_input = 0.0
        self.cost_kept = 0.0
        self.dedupe_s = 0.0
        self.dedupe_cpu = 0.0
        self.exact = ExactDeduper() if cfg.dedupe else None
        self.near = NearDeduper(cfg.near_dup_threshold) if cfg.near_dup_threshold else None
        self._batch: list[tuple[Ref, Trajectory, str, float, list[dict[str, str]]]] = []
        # (run index, task key, sample index, verdict) of every trajectory read, for DS/decisions.jsonl (the
        # viewer shows why each was kept or dropped); "sft" is resolved to train/validation at the split
        self.verdicts: list[tuple[int, str, int, str]] = []

    def verdict(self, ref: Ref, traj: Trajectory, what: str) -> None:
        self.verdicts.append((ref[0], traj.task.key, traj.provenance.sample_index, what))

    def add(self, ref: Ref, traj: Trajectory, correct: float | None, reason: str | None, messages_for) -> None:
        self.inputs += 1
        for k, v in (("domain", traj.task.domain), ("source", traj.task.source), ("teacher", traj.provenance.model)):
            self.by[k][0][str(v)] += 1
        self.cost_input += traj.cost_usd
        why = classify(traj, correct, keep_recovered=self.cfg.keep_recovered)
        if why == "unscorable":
            self.unscorable[reason or "unscorable"] += 1
        if why in ("infra_error", "unscorable") or why in STRUCTURAL:
            self.removed[why] += 1
            self.verdict(ref, traj, why)
            return
        kind = "rejected" if why == "incorrect" else "sft"
        if kind == "rejected":
            self.removed["incorrect"] += 1
        self._batch.append((ref, traj, kind, float(correct), messages_for(traj)))  # type: ignore[arg-type]
        if len(self._batch) >= self.cfg.batch_size:
            self.flush()

    def flush(self) -> None:
        batch, self._batch = self._batch, []
        lens: list[int | None] = list(self.counter.count([b[4] for b in batch])) if self.counter else [None] * len(batch)
        cap = self.cfg.max_tokens if self.counter else None
        k = self.cfg.pairs_per_task
        for (ref, traj, kind, score, _), n in zip(batch, lens, strict=True):
            over = cap is not None and n is not None and n > cap
            key = traj.task.key
            if kind == "rejected":
                if over:
                    self.rejected_length_cap += 1
                    self.verdict(ref, traj, "length_cap")
                    continue
                self.rejected.append((ref, score))
                self.verdict(ref, traj, "rejected")
                if k:
                    rej = self.pair_refs.setdefault(key, ([], []))[1]
                    if len(rej) < k:
                        rej.append(ref)
                continue
            if over:
                self.removed["length_cap"] += 1
                self.verdict(ref, traj, "length_cap")
                continue
            if self.exact or self.near:
                t0, c0 = time.perf_counter(), time.process_time()
                from agentkd.curate.dedupe import actions

                codes = actions(traj)
                dup = "duplicate" if self.exact and self.exact.seen(key, codes) else None
                if dup is None and self.near and self.near.seen(codes):
                    dup = "near_duplicate"
                self.dedupe_s += time.perf_counter() - t0
                self.dedupe_cpu += time.process_time() - c0
                if dup:
                    self.removed[dup] += 1
                    self.verdict(ref, traj, dup)
                    continue
            self.sft.append((ref, key, score))
            self.verdict(ref, traj, "sft")
            if k:
                ch = self.pair_refs.setdefault(key, ([], []))[0]
                if len(ch) < k:
                    ch.append(ref)
            for name, v in (("domain", traj.task.domain), ("source", traj.task.source),
                            ("teacher", traj.provenance.model)):
                self.by[name][1][str(v)] += 1
            self.steps.append(len(traj.steps))
            if n is not None:
                self.tokens.append(n)
            tool_calls(traj, self.tool_calls)
            self.cost_kept += traj.cost_usd


def _renderer(cfg: CurateConfig, run: RunInfo):
    """traj → student messages, with this run's tool listing and step limit."""
    max_steps = cfg.max_steps or run.max_steps or DEFAULT_MAX_STEPS

    texts: dict[tuple[str, ...], str] = {}

    def render(traj: Trajectory) -> list[dict[str, str]]:
        names = tuple(traj.provenance.tools) or ("final_answer",)
        text = cfg.tools_text
        if text is None:
            text = texts.get(names)
            if text is None:
                text = texts[names] = tools_text_for(names, run.tools)
        return student_messages(traj, prompt=cfg.prompt, tools_text=text, max_steps=max_steps)

    return render


def select(cfg: CurateConfig, runs: list[RunInfo], scores: list[dict], counter: TokenCounter | None) -> _Selection:
    from agentkd.score.base import score_trajectory

    sel = _Selection(cfg, counter)
    for ri, run in enumerate(runs):
        render = _renderer(cfg, run)
        run_scores = scores[ri]
        for off, ln, traj in iter_run(run):
            got = run_scores.get(traj.key)
            if got is None:
                if cfg.score:
                    r = score_trajectory(traj, cfg.scorer or "by_domain")
                    got = (r.correct, r.reason)
                else:
                    got = (None, "not scored (curate.score is false)")
            sel.add((ri, off, ln), traj, got[0], got[1], render)
    sel.flush()
    return sel


def split_tasks(task_keys: set[str], fraction: float, seed: int) -> set[str]:
    """The validation tasks: the `fraction` of tasks first in seeded-hash order (at least one when there are
    two or more tasks and fraction > 0, never all). Deterministic; depends on the task keys only."""
    order = sorted(task_keys, key=lambda k: hashlib.sha256(f"{seed}\0{k}".encode()).digest())
    n = len(order)
    n_val = round(fraction * n)
    if fraction > 0 and n >= 2:
        n_val = min(max(1, n_val), n - 1)
    return set(order[:n_val])


# -- pass 2 ----------------------------------------------------------------------------------------------
def _row(traj: Trajectory, msgs: list[dict[str, str]], score: float, run: RunInfo) -> dict[str, Any]:
    t = traj.task
    return {"messages": msgs, "task_key": t.key, "task_id": t.id, "domain": t.domain, "source": t.source,
            "teacher": traj.provenance.model, "score": score, "prefix_mode": traj.provenance.prefix_mode,
            "source_run": str(run.path), "sample_index": traj.provenance.sample_index, "num_steps": len(traj.steps)}


def _write(cfg: CurateConfig, runs: list[RunInfo], sel: _Selection, val: set[str], tmp: Path) -> dict[str, Any]:
    from datasets import DatasetDict

    from agentkd.curate import export as ex

    scratch = tmp / "_arrow"
    scratch.mkdir(parents=True)
    sft = {s: ex.ArrowSplitWriter(scratch / f"{s}.arrow", ex.SFT_COLUMNS) for s in ("train", "validation", "rejected")}
    pairs = {s: ex.ArrowSplitWriter(scratch / f"pairs-{s}.arrow", ex.PAIR_COLUMNS) for s in ("train", "validation")}
    exports = {s: ex.ExportWriter(tmp / "exports", cfg.exports, suffix="" if s == "train" else "_validation")
               for s in ("train", "validation")} if cfg.exports else {}
    renders = [_renderer(cfg, r) for r in runs]
    tasks: dict[str, set[str]] = {"train": set(), "validation": set()}
    mismatched = 0
    with LineReader(runs) as reader:
        for (ri, off, ln), key, score in sel.sft:
            traj = reader.read(ri, off, ln)
            msgs = renders[ri](traj)
            split = "validation" if key in val else "train"
            tasks[split].add(key)
            sft[split].add(_row(traj, msgs, score, runs[ri]))
            if split in exports:
                exports[split].add(msgs)
        for (ri, off, ln), score in sel.rejected:
            traj = reader.read(ri, off, ln)
            sft["rejected"].add(_row(traj, renders[ri](traj), score, runs[ri]))
        for key, (chosen, rejected) in sel.pair_refs.items():
            combos = [(c, r) for c in chosen for r in rejected][: cfg.pairs_per_task]
            for c, r in combos:
                cm = renders[c[0]](reader.read(*c))
                rm = renders[r[0]](reader.read(*r))
                if cm[:2] != rm[:2]:  # different tool listings (runs with other tools): not one prompt
                    mismatched += 1
                    continue
                split = "validation" if key in val else "train"
                pairs[split].add({"prompt": cm[:2], "chosen": cm[2:], "rejected": rm[2:], "task_key": key})
    for w in (*sft.values(), *pairs.values(), *exports.values()):
        w.close()
    _write_decisions(tmp / "decisions.jsonl", runs, sel, val)
    if "sharegpt" in cfg.exports:
        import json

        info = ex.llamafactory_info({"agentkd_train": "sharegpt.json", "agentkd_validation": "sharegpt_validation.json"})
        (tmp / "exports" / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    for folder, writers in ((tmp, sft), (tmp / "pairs", pairs)):
        # an empty split needs num_shards=1: with none, save_to_disk writes no shard and it would not load
        DatasetDict({s: w.dataset() for s, w in writers.items()}).save_to_disk(
            str(folder), num_shards={s: 1 for s, w in writers.items() if not w.count})
    shutil.rmtree(scratch)
    h = hashlib.sha256()
    for name, w in (*sft.items(), *((f"pairs/{s}", w) for s, w in pairs.items())):
        h.update(f"{name}:{w.count}:{w.sha.hexdigest()}\n".encode())
    splits: dict[str, Any] = {s: {"rows": sft[s].count, "tasks": len(tasks[s])} for s in ("train", "validation")}
    splits["rejected"] = {"rows": sft["rejected"].count}
    splits |= {f"pairs/{s}": {"rows": w.count} for s, w in pairs.items()}
    return {"sha256": h.hexdigest(), "splits": splits, "pairs_prompt_mismatch": mismatched}


def _write_decisions(path: Path, runs: list[RunInfo], sel: _Selection, val: set[str]) -> None:
    """One line per trajectory read: {"run", "key": [task key, sample], "verdict"}: train / validation /
    rejected, or the filter that dropped it (see FILTERS). Read by `agentkd view RUN --dataset DS`."""
    import json

    with path.open("w") as f:
        for ri, key, sample, what in sel.verdicts:
            if what == "sft":
                what = "validation" if key in val else "train"
            f.write(json.dumps({"run": str(runs[ri].path), "key": [key, sample], "verdict": what}) + "\n")


def _card(cfg: CurateConfig, runs: list[RunInfo], sel: _Selection, written: dict[str, Any]) -> dict[str, Any]:
    from agentkd import __version__
    from agentkd.curate.card import counts, distribution

    remaining = sel.inputs
    filters = []
    for name in FILTERS:
        remaining -= sel.removed[name]
        filters.append({"name": name, "removed": sel.removed[name], "remaining": remaining})
    bad = [str(b) for r in runs for b in r.bad]
    tok = distribution(sel.tokens) if sel.counter else None
    return {
        "sha256": written["sha256"],
        "agentkd_version": __version__,
        "config": cfg.model_dump(mode="json", exclude={"out", "overwrite"}),
        "runs": [r.card() for r in runs],
        "input": {"trajectories": sel.inputs, "bad_lines": len(bad), "bad_line_examples": bad[:20]},
        "filters": filters,
        "unscorable": {"count": sel.removed["unscorable"], "reasons": counts(sel.unscorable)},
        "rejected": {"rows": written["splits"]["rejected"]["rows"], "length_cap": sel.rejected_length_cap},
        "splits": written["splits"],
        "pairs_prompt_mismatch": written["pairs_prompt_mismatch"],
        "by_domain": {"input": counts(sel.by["domain"][0]), "kept": counts(sel.by["domain"][1])},
        "by_source": {"input": counts(sel.by["source"][0]), "kept": counts(sel.by["source"][1])},
        "by_teacher": {"input": counts(sel.by["teacher"][0]), "kept": counts(sel.by["teacher"][1])},
        "steps": distribution(sel.steps),
        "steps_histogram": {str(k): v for k, v in sorted(Counter(sel.steps).items())},
        "tool_calls": counts(sel.tool_calls),
        "tokens": {"tokenizer": cfg.student, **(tok or {})} if sel.counter else None,
        "teacher_cost_usd": {"input": round(sel.cost_input, 6), "kept": round(sel.cost_kept, 6)},
    }


def _clear_stale(dest: Path) -> None:
    """Remove DATASET.tmp-PID-… folders that a killed curate (PID no longer running) left behind."""
    for p in dest.parent.glob(f"{dest.name}.tmp-*-*"):
        pid = p.name[len(dest.name) + 5:].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(p, ignore_errors=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Put the finished tmp folder at `out` with renames only (an old dataset is replaced whole)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def curate(cfg: CurateConfig, out: str | os.PathLike | None = None, *, progress: bool = False) -> CurateResult:
    """Curate `cfg.runs` into the dataset folder `out` (or cfg.out); see the module docstring."""
    import json

    dest = Path(out or cfg.out or "")
    if not (out or cfg.out):
        raise CurateError("no output folder: pass --out DATASET (or set curate.out)")
    if not cfg.runs:
        raise CurateError("no runs to curate: pass run folders (or set curate.runs)")
    if dest.exists() and not cfg.overwrite:
        raise CurateError(f"{dest}: already exists; pass --overwrite (curate.overwrite: true) to replace it")
    runs = [open_run(r) for r in cfg.runs]
    clock = _Clock()
    scores, per_run = [], []
    with clock("score"):
        for r in runs:
            t1 = time.perf_counter()
            scores.append(_scores(r, cfg))
            per_run.append(time.perf_counter() - t1)
    with clock("setup"):  # one-off loads (the tokenizer, later datasets) are no phase's work
        counter = TokenCounter(cfg.student) if cfg.student else None
    with clock("filter"):
        sel = select(cfg, runs, scores, counter)
    clock.move("filter", "dedupe", sel.dedupe_s, sel.dedupe_cpu)
    bad = [b for r in runs for b in r.bad]
    if bad and cfg.on_bad_line == "error":
        more = f" (+{len(bad) - 1} more bad lines)" if len(bad) > 1 else ""
        raise CurateError(f"{bad[0]}{more}; nothing written (fix the run, or set curate.on_bad_line=skip)")
    if not sel.sft:
        raise CurateError(f"no trajectory passed the filters ({sel.inputs} read: "
                          + ", ".join(f"{k} {v}" for k, v in sel.removed.items() if v) + "); nothing written")
    with clock("setup"):
        import datasets  # noqa: F401

    clock.start("export")
    val = split_tasks({key for _, key, _ in sel.sft}, cfg.validation_fraction, cfg.seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(dest)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        was_off = are_progress_bars_disabled()
        disable_progress_bars()  # one bar per split saved is noise; the CLI prints the outcome
        try:
            written = _write(cfg, runs, sel, val, tmp)
        finally:
            if not was_off:
                enable_progress_bars()
        card = _card(cfg, runs, sel, written)
        from agentkd.curate.card import render_markdown

        (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        (tmp / "card.md").write_text(render_markdown(card))
        _swap_in(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    clock.stop("export")
    if cfg.push_to_hub:
        push(dest, cfg.push_to_hub, private=cfg.hub_private)
    return CurateResult(out=dest, card=card, timings={**clock.wall, "score_runs": per_run, "cpu": clock.cpu})


class HubError(CurateError):
    """push_to_hub failed (no network, no token, no access): the dataset on disk is complete."""

    exit_code = 4


def push(dataset: Path, repo: str, *, private: bool = True) -> None:
    """Push the SFT DatasetDict (train, validation, rejected) of a dataset folder to the Hub."""
    from datasets import load_from_disk

    try:
        load_from_disk(str(dataset)).push_to_hub(repo, private=private)
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise HubError(f"push_to_hub {repo!r} failed{offline}: {type(e).__name__}: {first}; the dataset at "
                       f"{dataset} is complete") from None
