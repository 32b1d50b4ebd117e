"""Self-consistent action generation (SAG): N candidate actions per step, voted on by what they do.

    pick = await sag_action(messages, model, sandbox, cfg, domain="math", seed=7, prefill=None)

1. Sample N candidates: one request with `n` (one batched `generate` for local models); choices a backend
   did not return (one that ignores `n`) are drawn by parallel requests with seeds seed+1, seed+2, ...
2. Drop the candidates that do not parse (no code block).
3. Run the rest **each on its own fork of the sandbox state** (`Sandbox.run_candidates`: copy-on-write
   processes, each with its own copy of the work dir), in parallel; drop those that raise or time out.
4. Vote by outcome. A candidate that called `final_answer(x)` votes for `final:` + the scorer's
   normalised answer (`agentkd.score.base.vote_key(x, domain)`: `final_answer(4)` and `final_answer("4.0")`
   agree on a math task); any other votes for `obs:` + its observation with whitespace collapsed and memory
   addresses masked. The largest group wins.
   Tie-break between equally large groups: the group with the best mean token log-probability (the mean,
   over its members, of each candidate's mean token log-probability) when the backend returned log-probs
   for every candidate of the tied groups; otherwise the group whose first member came first. The group's
   representative is its earliest member.
5. Commit the winner's fork (its variables and files become the episode's state; the losers' are gone).
   If no candidate parsed, the first candidate's output is the step (the loop answers with the format
   help); if every parsed candidate failed, the first one's error is the observation and the state stays
   as it was before the step.

Every candidate, its outcome and the vote go into the step's `extra["sag"]` (see `SagPick.record`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from agentkd.agent.config import AgentConfig
from agentkd.agent.parse import parse_action
from agentkd.models.base import ChatModel, Completion, Message, Usage
from agentkd.sandbox.result import ExecResult

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


@dataclass
class Candidate:
    """One sampled action and what became of it."""

    index: int
    output: str
    code: str | None
    logprob: float | None = None
    result: ExecResult | None = None
    outcome: str = "unparsable"  # unparsable | error | final | observation
    key: str | None = None
    group: int | None = None

    @property
    def valid(self) -> bool:
        return self.key is not None


@dataclass
class Vote:
    """The groups of valid candidates (by key, in order of first appearance) and the winner."""

    groups: list[list[int]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    winner: int | None = None  # candidate index
    status: str = "none"  # unanimous | split | none
    tie_break: str | None = None  # logprob | earliest, when groups tied for the most votes


@dataclass
class SagPick:
    """What the step is made of: the chosen output, its (already run and committed) result, the summed usage."""

    output: str
    completion: Completion
    result: ExecResult | None
    record: dict[str, Any]


def observation_key(result: ExecResult) -> str:
    """The normalised observation a non-final candidate votes with."""
    text = " ".join(result.observation().split())
    return "obs:" + _ADDRESS.sub("0x?", text)


def answer_key(value: Any, domain: str) -> str:
    from agentkd.score.base import vote_key

    try:
        return "final:" + vote_key(value, domain)
    except Exception:  # an odd value the normaliser cannot take: compare it as text
        return "final:" + " ".join(str(value).split())


def classify(cands: Sequence[Candidate], domain: str) -> None:
    """Set each executed candidate's outcome and vote key."""
    for c in cands:
        r = c.result
        if c.code is None or r is None:
            c.outcome, c.key = "unparsable", None
        elif r.error or r.timed_out or r.restarted:
            c.outcome, c.key = "error", None
        elif r.is_final:
            c.outcome, c.key = "final", answer_key(r.final_answer, domain)
        else:
            c.outcome, c.key = "observation", observation_key(r)


def vote(cands: Sequence[Candidate]) -> Vote:
    """Group the valid candidates by key and pick the winner (the rule is in the module docstring)."""
    v = Vote()
    for c in cands:
        if not c.valid:
            continue
        if c.key not in v.keys:
            v.keys.append(c.key)  # type: ignore[arg-type]
            v.groups.append([])
        c.group = v.keys.index(c.key)  # type: ignore[arg-type]
        v.groups[c.group].append(c.index)
    if not v.groups:
        return v
    v.status = "unanimous" if len(v.groups) == 1 else "split"
    top = max(len(g) for g in v.groups)
    tied = [gi for gi, g in enumerate(v.groups) if len(g) == top]
    best = tied[0]  # groups are in order of their first member: the earliest
    if len(tied) > 1:
        by_index = {c.index: c for c in cands}
        lps = {gi: [by_index[i].logprob for i in v.groups[gi]] for gi in tied}
        if all(lp is not None for g in lps.values() for lp in g):
            means = {gi: sum(g) / len(g) for gi, g in lps.items()}  # type: ignore[arg-type]
            best = max(tied, key=lambda gi: (means[gi], -gi))
            v.tie_break = "logprob"
        else:
            v.tie_break = "earliest"
    v.winner = v.groups[best][0]
    return v


def _mean_logprob(comp: Completion) -> float | None:
    return sum(comp.logprobs) / len(comp.logprobs) if comp.logprobs else None


async def sample(model: ChatModel, messages: list[Message], cfg: AgentConfig, *, seed: int | None,
                 prefill: str | None, max_tokens: int | None) -> tuple[list[Completion], int]:
    """N candidates: one request with n, topped up by parallel single requests. Returns (completions, requests)."""
    s = cfg.sag
    kw: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "stop": cfg.stop, "prefill": prefill}
    if max_tokens is not None:
        kw["max_tokens"] = max_tokens
    comps: list[Completion] = []
    requests = 0
    if s.requests == "auto":
        comps = list(await model.generate(messages, n=s.n, seed=seed, **kw))[: s.n]
        requests = 1
    missing = s.n - len(comps)
    if missing > 0:
        base = 0 if s.requests == "parallel" else 1
        more = await asyncio.gather(*(model.generate(messages, n=1, seed=None if seed is None else seed + base + j,
                                                     **kw) for j in range(missing)))
        comps += [c for batch in more for c in batch[:1]]
        requests += missing
    return comps, requests


async def sag_action(messages: list[Message], model: ChatModel, sandbox: Any, cfg: AgentConfig, *, domain: str,
                     seed: int | None, prefill: str | None = None, max_tokens: int | None = None,
                     timeout_s: float | None = None, executor: Executor | None = None) -> SagPick:
    """One SAG step on `sandbox` (a `Sandbox`, pooled or started-ahead one: anything with
    `arun_candidates` and `commit`). Model errors propagate (the loop handles them as for one action)."""
    comps, requests = await sample(model, messages, cfg, seed=seed, prefill=prefill, max_tokens=max_tokens)
    cands = []
    for j, comp in enumerate(comps):
        output = (prefill or "") + comp.text
        cands.append(Candidate(index=j, output=output, code=parse_action(output).code, logprob=_mean_logprob(comp)))
    runnable = [c for c in cands if c.code is not None]
    if runnable:
        results = await sandbox.arun_candidates([c.code for c in runnable], timeout_s, executor=executor)
        for c, r in zip(runnable, results, strict=True):
            c.result = r
    classify(cands, domain)
    v = vote(cands)
    if v.winner is not None:
        chosen = cands[v.winner]
        if not chosen.result.is_final:  # type: ignore[union-attr]  # a final answer ends the episode: no state to keep
            await asyncio.get_running_loop().run_in_executor(executor, sandbox.commit, chosen.result)
    elif runnable:
        chosen = runnable[0]  # every candidate failed: the first one's error is the observation
    else:
        chosen = cands[0]  # none parsed: the loop answers with the format help
    usage = Usage(prompt_tokens=max((c.usage.prompt_tokens for c in comps), default=0) * requests,
                  completion_tokens=sum(c.usage.completion_tokens for c in comps))
    summed = Completion(text=chosen.output, usage=usage, cost_usd=sum(c.cost_usd for c in comps),
                        cached=bool(comps) and all(c.cached for c in comps))
    return SagPick(output=chosen.output, completion=summed, result=chosen.result,
                   record=_record(cands, v, cfg, requests, chosen.index))


def _record(cands: list[Candidate], v: Vote, cfg: AgentConfig, requests: int, chosen: int) -> dict[str, Any]:
    cut = cfg.sag.max_observation_chars

    def one(c: Candidate) -> dict[str, Any]:
        r = c.result
        return {"index": c.index, "output": c.output, "outcome": c.outcome, "key": c.key, "group": c.group,
                "logprob": c.logprob,
                "observation": None if r is None or r.is_final else r.observation(cut),
                "error": None if r is None else (r.error or ("timed out" if r.timed_out else None)),
                "final_answer": None if r is None else r.final_answer,
                "duration_s": None if r is None else round(r.duration_s, 4)}

    return {"n": cfg.sag.n, "temperature": cfg.sag.temperature, "top_p": cfg.sag.top_p, "requests": requests,
            "valid": sum(c.valid for c in cands), "vote": v.status, "winner": v.winner, "chosen": chosen,
            "tie_break": v.tie_break,
            "groups": [{"key": k, "members": g} for k, g in zip(v.keys, v.groups, strict=True)],
            "candidates": [one(c) for c in cands]}
