"""A small real run folder for the viewer tests: `Trajectory` objects written the way the engine writes them,
with a scores sidecar, a SAG step, a failed episode, a step error and hostile model output."""

from __future__ import annotations

import json
from pathlib import Path

from agentkd.core.jsonl import JsonlStore
from agentkd.core.types import Provenance, Step, Task, Trajectory

HOSTILE = ("<script>window.__pwned = 1; alert(1)</script><img src=x onerror=\"window.__pwned = 2\"></script >"
           "<!-- <b>bold</b>")


def _traj(i: int, *, domain: str, source: str, question: str, answer, final, steps: list[Step],
          status: str = "ok", model: str = "openai/gpt-4o") -> Trajectory:
    return Trajectory(
        task=Task(id=f"q{i}", question=question, answer=answer, domain=domain, source=source),
        system_prompt="You are a CodeAct agent.", user_prompt=f"Task: {question}", steps=steps,
        final_answer=final, status=status,
        provenance=Provenance(model=model, provider="litellm", sampling={"temperature": 0.0}, seed=7,
                              sample_index=0, agentkd_version="0.1.0", tools=["search"]))


def sag_extra() -> dict:
    cands = [
        {"index": 0, "output": "Thought: add\nCode:\n```py\nprint(2+2)\n```", "outcome": "ok", "key": "4",
         "group": 0, "logprob": -1.25, "observation": "4", "error": None, "final_answer": None, "duration_s": 0.1},
        {"index": 1, "output": "Thought: add again\nCode:\n```py\nprint(4)\n```", "outcome": "ok", "key": "4",
         "group": 0, "logprob": -0.5, "observation": "4", "error": None, "final_answer": None, "duration_s": 0.2},
        {"index": 2, "output": "Thought: CANDIDATE_THREE_WRONG\nCode:\n```py\nprint(5)\n```", "outcome": "ok",
         "key": "5", "group": 1, "logprob": -3.0, "observation": "5", "error": None, "final_answer": None,
         "duration_s": 0.15},
    ]
    return {"sag": {"n": 3, "temperature": 0.7, "top_p": 0.95, "requests": 1, "valid": 3, "vote": "split",
                    "winner": "4", "chosen": 1, "tie_break": "logprob",
                    "groups": [{"key": "4", "members": [0, 1]}, {"key": "5", "members": [2]}],
                    "candidates": cands}}


def make_run(root: Path) -> Path:
    """RUN folder with 5 stored trajectories + 1 failed one; returns the folder."""
    run = root / "run"
    trajs = [
        _traj(0, domain="math", source="gsm8k", question="What is 2+2?", answer="4", final="4", steps=[
            Step(index=0, model_output="Thought: compute it\nCode:\n```py\nx = 2 + 2  # sum\nprint(x)\n```",
                 thought="compute it with SAG", code="x = 2 + 2  # sum\nprint(x)", observation="4",
                 tokens_in=100, tokens_out=20, latency_s=0.5, cost_usd=0.001, extra=sag_extra()),
            Step(index=1, model_output="final_answer(4)", thought="done", code="final_answer(4)",
                 final_answer=4, is_final=True, tokens_in=120, tokens_out=5, cost_usd=0.0005)]),
        _traj(1, domain="factual", source="hotpotqa", question="Capital of France?", answer=["Paris"],
              final="Lyon", steps=[
                  Step(index=0, model_output="x", thought="Thinking about ZEBRA_TOKEN", code="search('france')",
                       observation="Paris is the capital.", tokens_in=50, tokens_out=10),
                  Step(index=1, model_output="y", thought="answer", code="final_answer('Lyon')",
                       final_answer="Lyon", is_final=True)]),
        _traj(2, domain="factual", source="hotpotqa", question="Who wrote Hamlet? " + HOSTILE, answer="Shakespeare",
              final="Shakespeare", steps=[
                  Step(index=0, model_output=HOSTILE, thought="hostile thought " + HOSTILE,
                       code=f"print('{HOSTILE}')", observation=HOSTILE, error="SyntaxError: " + HOSTILE),
                  Step(index=1, model_output="z", thought="ok", code="final_answer('Shakespeare')",
                       final_answer="Shakespeare", is_final=True)]),
        _traj(3, domain="math", source="aime", question="Hard problem", answer="42", final=None, status="max_steps",
              steps=[Step(index=0, model_output="w", thought="stuck", code="1/0", observation=None,
                          error="ZeroDivisionError: division by zero")]),
        _traj(4, domain="math", source="gsm8k", question="Unscored one", answer=None, final="7", steps=[
            Step(index=0, model_output="v", thought="guess", code="final_answer(7)", final_answer=7, is_final=True)]),
    ]
    failed = _traj(5, domain="factual", source="hotpotqa", question="Infra failure task", answer="x", final=None,
                   status="error", steps=[])
    failed.status_reason = "APIConnectionError: connection refused"
    with JsonlStore(run / "trajectories.jsonl") as s:
        s.extend(trajs)
    with JsonlStore(run / "failed.jsonl") as s:
        s.append(failed)
    scores = [
        {"key": ["gsm8k/q0", 0], "correct": 1.0, "metrics": {"equiv": 1.0}, "scorer": "math_equiv",
         "reason": None, "judge": None},
        {"key": ["hotpotqa/q1", 0], "correct": 0.0, "metrics": {"em": 0.0, "f1": 0.0}, "scorer": "qa_em_f1",
         "reason": None, "judge": None},
        {"key": ["hotpotqa/q2", 0], "correct": 1.0, "metrics": {"em": 1.0, "f1": 1.0}, "scorer": "qa_em_f1",
         "reason": None, "judge": None},
        {"key": ["aime/q3", 0], "correct": 0.0, "metrics": {"equiv": 0.0}, "scorer": "math_equiv",
         "reason": None, "judge": None},
        {"key": ["gsm8k/q4", 0], "correct": None, "metrics": {}, "scorer": "math_equiv", "reason": "no gold",
         "judge": None},
    ]
    (run / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
    (run / "config.yaml").write_text("teacher: openai/gpt-4o\n")
    return run


def make_dataset(root: Path, run: Path) -> Path:
    ds = root / "ds"
    ds.mkdir()
    lines = [{"run": str(run), "key": ["gsm8k/q0", 0], "verdict": "train"},
             {"run": str(run), "key": ["hotpotqa/q1", 0], "verdict": "rejected"},
             {"run": str(run), "key": ["hotpotqa/q2", 0], "verdict": "validation"},
             {"run": str(run), "key": ["aime/q3", 0], "verdict": "max_steps"},
             {"run": "/elsewhere/other_run", "key": ["gsm8k/q4", 0], "verdict": "duplicate"}]
    (ds / "decisions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return ds
