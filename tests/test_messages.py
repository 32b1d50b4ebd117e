"""Trajectory <-> OpenAI chat messages."""

from __future__ import annotations

import pytest

from agentkd.core.messages import from_chat_record, from_messages, to_chat_record, to_messages
from agentkd.core.types import Provenance, Step, Task, Trajectory


def make_traj() -> Trajectory:
    task = Task(id=7, question="Who wrote Hamlet?", answer=["William Shakespeare", "Shakespeare"],
                source="demo", metadata={"level": "hard"})
    steps = [
        Step(index=0, model_output="Thought: search it.\n```py\nprint(web_search('Hamlet author'))\n```<end_code>",
             thought="search it.", code="print(web_search('Hamlet author'))", observation="1. Hamlet ... Shakespeare",
             prefix="Thought: search it.", tokens_in=120, tokens_out=30, latency_s=0.5, cost_usd=0.001),
        Step(index=1, model_output="Thought: done.\n```py\nfinal_answer('Shakespeare')\n```<end_code>",
             code="final_answer('Shakespeare')", final_answer="Shakespeare", is_final=True, tokens_in=200),
    ]
    return Trajectory(task=task, system_prompt="You are an agent.", user_prompt="Task: Who wrote Hamlet?",
                      steps=steps, final_answer="Shakespeare", status="ok",
                      provenance=Provenance(model="openai/gpt-4o", provider="litellm", seed=3, sample_index=1,
                                            prefix_text="Thought: search it.", prefix_mode="prefill",
                                            sandbox_backend="bwrap", tools=["web_search", "final_answer"]),
                      scores={"em": 1.0})


def test_to_messages_shape():
    msgs = to_messages(make_traj())
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[3]["content"] == "Observation:\n1. Hamlet ... Shakespeare"


def test_round_trip_is_lossless():
    traj = make_traj()
    rec = to_chat_record(traj)
    back = from_chat_record(rec)
    assert back == traj
    assert back.model_dump() == traj.model_dump()
    # the record is plain JSON
    import json

    assert from_chat_record(json.loads(json.dumps(rec))) == traj


def test_round_trip_without_system_prompt_or_observation():
    traj = make_traj()
    traj.system_prompt = None
    traj.steps[1].observation = ""  # an empty observation is still a turn
    assert from_chat_record(to_chat_record(traj)) == traj


def test_tampered_record_errors():
    rec = to_chat_record(make_traj())
    rec["messages"].pop()
    with pytest.raises(ValueError, match="expected a 'assistant' message"):
        from_chat_record(rec)


def test_from_plain_messages():
    traj = make_traj()
    back = from_messages(to_messages(traj), traj.task)
    assert [s.model_output for s in back.steps] == [s.model_output for s in traj.steps]
    assert back.steps[0].observation == traj.steps[0].observation and back.user_prompt == traj.user_prompt
