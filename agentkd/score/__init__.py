"""Scoring: QA exact match / F1 / cover match, math equivalence (math-verify), an LLM judge.

    from agentkd.score.base import get_scorer, score_trajectory
    from agentkd.score.qa import exact_match, f1
    from agentkd.score.math import is_equiv          # imports math-verify on first use
    from agentkd.score.run import score_run          # `agentkd score RUN [--judge MODEL]`

Scores live beside a run's trajectories in RUN/scores.jsonl (`agentkd.score.store`), keyed by trajectory
key; trajectories.jsonl is never rewritten. Nothing heavy is imported here.
"""

from agentkd.score.base import Scorer, ScoreResult, get_scorer, score_trajectory, vote_key

__all__ = ["ScoreResult", "Scorer", "get_scorer", "score_trajectory", "vote_key"]
