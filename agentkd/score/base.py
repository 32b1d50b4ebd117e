"""The one scorer interface: `Scorer.score(prediction, task) -> ScoreResult`, and the registry of scorers.

A suite names its scorer (`scorer:` in its YAML): `qa_em_f1` (factual: exact match, F1, cover match),
`math_equiv` (math-verify equivalence) or `by_domain` (each task by its own domain). Scorers are imported
only when asked for, so factual scoring never imports math-verify or sympy.

`correct` is None when a trajectory cannot be scored (no gold answer, or an infrastructure-error
episode): such trajectories are neither right nor wrong and are left out of accuracies.
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agentkd.core.config import ConfigError
from agentkd.core.types import Task, Trajectory

# name -> "module:Class"; imported on first use
SCORERS: dict[str, str] = {
    "qa_em_f1": "agentkd.score.qa:QAScorer",
    "math_equiv": "agentkd.score.math:MathScorer",
    "by_domain": "agentkd.score.base:ByDomainScorer",
}
DOMAIN_SCORERS: dict[str, str] = {"factual": "qa_em_f1", "math": "math_equiv", "other": "qa_em_f1"}


class ScoreResult(BaseModel):
    """One trajectory's score, as stored in RUN/scores.jsonl (with its key)."""

    correct: float | None = Field(description="1.0 right, 0.0 wrong, None unscorable (see reason).")
    metrics: dict[str, float] = Field(default_factory=dict, description="factual: em, f1, cover (+judge); "
                                      "math: equiv.")
    scorer: str = Field(description="Name of the scorer that produced this.")
    reason: str | None = Field(default=None, description="Why it is unscorable, or why the judge gave no verdict.")
    judge: dict[str, Any] | None = Field(default=None, description="{model, prompt_hash, explanation, verdict} "
                                         "when an LLM judge scored it.")


class Scorer(abc.ABC):
    """Scores one final answer against a task's gold answer."""

    name: str = "scorer"

    @abc.abstractmethod
    def score(self, prediction: Any, task: Task) -> ScoreResult: ...


class ByDomainScorer(Scorer):
    """Each task by its domain's scorer (factual → qa_em_f1, math → math_equiv)."""

    name = "by_domain"

    def score(self, prediction: Any, task: Task) -> ScoreResult:
        return get_scorer(DOMAIN_SCORERS.get(task.domain, "qa_em_f1")).score(prediction, task)


_instances: dict[str, Scorer] = {}


def get_scorer(name: str, *, file: str | None = None) -> Scorer:
    """The scorer called `name`. An unknown name is a ConfigError naming `file` (e.g. the suite's YAML)
    and the key `scorer`."""
    scorer = _instances.get(name)
    if scorer is None:
        if name not in SCORERS:
            raise ConfigError(f"unknown scorer {name!r} (known: {', '.join(sorted(SCORERS))})", file=file,
                              path="scorer")
        mod, _, cls = SCORERS[name].partition(":")
        scorer = _instances[name] = getattr(importlib.import_module(mod), cls)()
    return scorer


def suite_scorer(suite: str) -> Scorer | None:
    """The scorer a suite's YAML names (None when no suite of that name exists, e.g. ad-hoc task files).
    An unknown scorer name fails with a one-line ConfigError naming the suite file and key `scorer`."""
    from agentkd.core.suites import list_suites, load_suite

    if suite.endswith((".yaml", ".yml")):
        where = suite if Path(suite).is_file() else None
    else:
        where = list_suites().get(suite)
    if where is None:
        return None
    return get_scorer(load_suite(suite).scorer, file=str(where))


def unscorable(reason: str, scorer: str) -> ScoreResult:
    return ScoreResult(correct=None, scorer=scorer, reason=reason)


def scorer_name(scorer: Scorer | str, domain: str) -> str:
    """The name a score records: by_domain resolves to the domain's scorer."""
    name = scorer if isinstance(scorer, str) else scorer.name
    return DOMAIN_SCORERS.get(domain, "qa_em_f1") if name == "by_domain" else name


def score_trajectory(traj: Trajectory, scorer: str = "by_domain") -> ScoreResult:
    """Score a trajectory's final answer. Infrastructure errors (status "error") are unscorable, never wrong;
    an episode that ended without an answer (max_steps) is scored against the gold as an empty answer."""
    if traj.status == "error":
        return unscorable(f"infrastructure error: {traj.status_reason or 'episode failed'}",
                          scorer_name(scorer, traj.task.domain))
    return get_scorer(scorer).score(traj.final_answer, traj.task)


def vote_key(value: Any, domain: str) -> str:
    """The normalised answer used to group equal final answers (SAG voting): factual → the QA normalisation,
    math → `agentkd.score.math.canonical`."""
    if domain == "math":
        from agentkd.score.math import canonical

        return canonical(value)
    from agentkd.score.qa import as_text, normalize_answer

    return normalize_answer(as_text(value))
