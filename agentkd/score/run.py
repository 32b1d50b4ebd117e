"""`score_run`: add scores to a run folder, beside its trajectories (what `agentkd score RUN` calls).

Streams RUN/trajectories.jsonl (never written), scores every trajectory whose key has no line in
RUN/scores.jsonl yet, and, when a judge is given, asks it about every factual answer that lacks this
judge's verdict (same model and prompt hash). A torn or foreign line is reported with its file and line
number and skipped; a trajectory of a schema version this agentkd does not read stops the run (ConfigError,
exit 2). Tasks without a gold answer and infrastructure-error episodes are unscorable (correct None).

The hot path reads plain dicts: no pydantic validation per line (scorers get a `TaskView`),
so factual scoring streams tens of thousands of trajectories a second; math-verify is only started when
a math answer needs it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agentkd.core.config import ConfigError
from agentkd.core.types import SCHEMA_VERSION
from agentkd.score.base import Scorer, ScoreResult, get_scorer, scorer_name, suite_scorer, unscorable
from agentkd.score.config import JudgeConfig
from agentkd.score.store import Key, ScoreWriter, read_score_records, score_line, scores_path

log = logging.getLogger(__name__)


class TaskView:
    """What scorers read of a `Task` (id, question, answer, domain, source, metadata, key), built from a JSON
    line without pydantic: validating each task cost more than scoring it. Scorers take it as a Task."""

    __slots__ = ("answer", "domain", "id", "metadata", "question", "source")

    def __init__(self, t: dict[str, Any]):
        self.id, self.question, self.answer = str(t["id"]), t.get("question", ""), t.get("answer")
        self.domain, self.source, self.metadata = t.get("domain", "factual"), t.get("source"), t.get("metadata") or {}

    @property
    def key(self) -> str:
        return f"{self.source}/{self.id}" if self.source else self.id


class ScoreSummary(BaseModel):
    """What one `score_run` did, and the run's scores as they now stand."""

    run: str = Field(description="The run folder.")
    trajectories: int = Field(default=0, description="Trajectories read from trajectories.jsonl.")
    scored_new: int = Field(default=0, description="Trajectories scored by this call.")
    judged_new: int = Field(default=0, description="Judge verdicts asked for by this call.")
    already_scored: int = Field(default=0, description="Trajectories that already had every score asked for.")
    skipped_lines: int = Field(default=0, description="Torn, corrupt or foreign lines skipped.")
    bad_lines: list[str] = Field(default_factory=list, description="'file:line: what' for the first 1,000 of them.")
    unscorable: dict[str, int] = Field(default_factory=dict, description="Why trajectories could not be scored.")
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict,
                                                 description="metric → {n, mean} over scorable trajectories.")
    judge: dict[str, str] | None = Field(default=None, description="{model, prompt_hash} of the judge used.")
    stopped: str | None = Field(default=None, description="'budget' when the judge's budget ran out.")
    wall_s: float = 0.0


def trajectory_key(obj: dict[str, Any]) -> Key:
    task = obj["task"]
    return (f"{task['source']}/{task['id']}" if task.get("source") else str(task["id"]),
            int((obj.get("provenance") or {}).get("sample_index", 0)))


_decoder = json.JSONDecoder()
_TAIL_KEYS = ("final_answer", "status", "status_reason", "provenance", "scores")


def decode_line(raw: bytes) -> Any:
    """A trajectory line's JSON without its bulky middle (prompts, steps) when it has the layout agentkd
    writes (`Trajectory.model_dump_json`: schema_version, task, ..., then final_answer, status, status_reason,
    provenance, scores last); the whole line otherwise. About 3x faster on a typical 10 KB line.

    Safe because an unescaped `,"final_answer":` cannot occur inside a JSON string, so its last occurrence
    is a key: the top-level one, or one nested in provenance/scores, where the rest of the line does not
    parse as one object and the whole line is decoded instead. Raises ValueError like json.loads."""
    try:
        s = raw.decode()
        if s.startswith('{"schema_version":'):
            version, i = _decoder.raw_decode(s, 18)
            if s.startswith(',"task":', i):
                task, i = _decoder.raw_decode(s, i + 8)
                pos = s.rfind(',"final_answer":')
                if pos >= i:
                    tail = json.loads("{" + s[pos + 1:])
                    if tuple(tail) == _TAIL_KEYS:
                        return {"schema_version": version, "task": task, **tail}
    except ValueError:
        pass
    return json.loads(raw)


def read_trajectory_lines(path: Path, summary: ScoreSummary) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each trajectory line; torn, corrupt or foreign lines are counted in
    `summary` with their file and line number. A schema version this agentkd does not read raises
    ConfigError."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if len(raw) < 3 and not raw.strip():  # (no strip() copy of every long line)
                continue
            problem = None
            try:
                obj = decode_line(raw)
            except ValueError:
                problem = "torn last line" if not raw.endswith(b"\n") else "corrupt line (not JSON)"
            else:
                task = obj.get("task") if isinstance(obj, dict) else None
                if not isinstance(task, dict) or "id" not in task:
                    problem = "not a trajectory (no task id)"
            if problem:
                summary.skipped_lines += 1
                if len(summary.bad_lines) < 1000:
                    summary.bad_lines.append(f"{path}:{lineno}: {problem}, skipped")
                log.debug("%s:%d: %s, skipped", path, lineno, problem)
                continue
            version = obj.get("schema_version", SCHEMA_VERSION)
            if version != SCHEMA_VERSION:
                raise ConfigError(f"trajectory schema_version {version!r} is not one this agentkd reads "
                                  f"({SCHEMA_VERSION}); score it with the agentkd that wrote it",
                                  file=path, path=f"line {lineno}: schema_version")
            yield lineno, obj


class _Scorers:
    """The scorer for each task: the one named (--scorer), else the task's suite's, else by_domain."""

    def __init__(self, name: str | None):
        self.fixed = get_scorer(name, file="--scorer") if name else None
        self._by_source: dict[str | None, Scorer] = {}

    def __call__(self, source: str | None) -> Scorer:
        if self.fixed is not None:
            return self.fixed
        s = self._by_source.get(source)
        if s is None:
            s = self._by_source[source] = (suite_scorer(source) if source else None) or get_scorer("by_domain")
        return s


def score_record(obj: dict[str, Any], scorer: Scorer) -> ScoreResult:
    """Score one trajectory given as the dict of its JSON line."""
    t = obj["task"]
    if obj.get("status") == "error":
        return unscorable(f"infrastructure error: {obj.get('status_reason') or 'episode failed'}",
                          scorer_name(scorer, t.get("domain", "factual")))
    return scorer.score(obj.get("final_answer"), TaskView(t))  # type: ignore[arg-type]


def score_run(run_dir: str | os.PathLike, *, scorer: str | None = None, judge: str | JudgeConfig | None = None,
              progress: bool = True) -> ScoreSummary:
    """Score what is new in a run folder; see the module docstring. Returns the summary of all its scores."""
    t0 = time.monotonic()
    run = Path(run_dir)
    path = run / "trajectories.jsonl"
    if not path.is_file():
        raise ConfigError("no trajectories.jsonl here (is it a run folder?)", file=run)
    summary = ScoreSummary(run=str(run))
    scorers = _Scorers(scorer)
    llm = None
    if judge is not None:
        from agentkd.score.judge import needs_judge, open_judge

        llm = open_judge(judge, run)
        summary.judge = {"model": llm.name, "prompt_hash": llm.prompt.hash}
    stored = read_score_records(run)
    current: dict[Key, dict[str, Any]] = {}
    to_judge: list[tuple[Key, ScoreResult, dict[str, Any]]] = []
    writer = ScoreWriter(run)
    try:
        for _, obj in read_trajectory_lines(path, summary):
            key = trajectory_key(obj)
            if key in current:
                continue  # a duplicate line: the first one counts
            summary.trajectories += 1
            record = stored.get(key)
            if record is None:
                result = score_record(obj, scorers(obj["task"].get("source")))
                record = score_line(key, result)
                writer.add_lines([record])
                summary.scored_new += 1
            current[key] = record
            wants_judge = (llm is not None and record["correct"] is not None and "em" in record["metrics"]
                           and obj["task"].get("domain", "factual") != "math" and needs_judge(record, llm))
            if wants_judge:
                base = ScoreResult.model_validate({k: v for k, v in record.items() if k != "key"})
                to_judge.append((key, base, {"question": obj["task"].get("question", ""),
                                             "gold": obj["task"].get("answer"), "prediction": obj.get("final_answer")}))
            elif record is stored.get(key):
                summary.already_scored += 1
        writer.flush()
        if llm is not None and to_judge:
            summary.stopped = asyncio.run(_judge_all(llm, to_judge, writer, current, summary, progress))
    finally:
        writer.close()
    _aggregate(summary, current.values())
    summary.wall_s = round(time.monotonic() - t0, 3)
    if summary.skipped_lines:
        log.warning("%s: skipped %d torn, corrupt or foreign lines", path, summary.skipped_lines)
    log.debug("scored %d new trajectories of %d in %.2fs -> %s", summary.scored_new, summary.trajectories,
              summary.wall_s, scores_path(run))
    return summary


async def _judge_all(llm, items, writer: ScoreWriter, current: dict, summary: ScoreSummary,
                     progress: bool) -> str | None:
    """Judge every item, writing each verdict as it comes; 'budget' when the budget ran out first."""
    from agentkd.models.budget import BudgetExceeded
    from agentkd.score.judge import judged

    # no more in flight than the client allows: the budget is checked before each call and counted after it,
    # so every answer queued at once would pass the check before the first one had cost anything
    gate = asyncio.Semaphore(llm.max_concurrency)

    async def one(key, base, ask):
        async with gate:
            verdict = await llm.judge(ask["question"], ask["gold"], ask["prediction"])
        result = judged(base, verdict)
        line = score_line(key, result)
        writer.add_lines([line])
        current[key] = line
        summary.judged_new += 1

    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task_id = bar.add_task(f"judging with {llm.name}", total=len(items))
    tasks = [asyncio.ensure_future(one(*item)) for item in items]
    stopped = None
    try:
        for fut in asyncio.as_completed(tasks):
            try:
                await fut
            except BudgetExceeded as e:
                log.warning("judge stopped: %s", e)
                stopped = "budget"
                break
            if bar is not None:
                bar.advance(task_id)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if bar is not None:
            bar.stop()
        await llm.model.aclose()
    return stopped


def _aggregate(summary: ScoreSummary, records) -> None:
    sums: dict[str, float] = defaultdict(float)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for r in records:
        if r["correct"] is None:
            reasons[(r.get("reason") or "unscorable").split(":")[0]] += 1
            continue
        sums["correct"] += r["correct"]
        counts["correct"] += 1
        for name, value in r["metrics"].items():
            sums[name] += value
            counts[name] += 1
    summary.metrics = {n: {"n": counts[n], "mean": sums[n] / counts[n]} for n in sorted(counts, key=_metric_order)}
    summary.unscorable = dict(reasons)


def _metric_order(name: str) -> tuple[int, str]:
    order = ["correct", "em", "f1", "cover", "judge", "equiv"]
    return (order.index(name) if name in order else len(order), name)
