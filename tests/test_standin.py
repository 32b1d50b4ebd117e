"""The stand-in teacher (a test double) picks its replies from a request's shape and the questions it was
told, not from agentkd's prompt wording: a collection with prompts worded nothing like agentkd's still gets
the expected answers, over real HTTP, a real sandbox and the real episode loop."""

from __future__ import annotations

import json

import httpx

from agentkd.collect import CollectConfig, collect
from agentkd.core.jsonl import iter_jsonl
from agentkd.testing.standin import StandinServer, answer_for

Q = "How many legs do three spiders have?"


def ask(url: str, body: dict) -> str:
    r = httpx.post(f"{url}/chat/completions", json={"model": "standin", **body}, timeout=10)
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def test_reply_follows_request_shape_and_known_questions():
    with StandinServer(questions=[Q, "How many legs?"]) as srv:
        turn = [{"role": "system", "content": "Anything."}, {"role": "user", "content": f"<<{Q}>> please"}]
        # no stop sequences, no assistant turn: a plain question (the FTP first pass)
        plain = ask(srv.url, {"messages": turn})
        # the same messages sent with stop sequences: an agent turn, answered with code
        agent = ask(srv.url, {"messages": turn, "stop": ["<end_code>"]})
        # after one action (an assistant turn), the final answer
        later = ask(srv.url, {"messages": [*turn, {"role": "assistant", "content": "x"},
                                           {"role": "user", "content": "Observation: 24"}]})
        recorded = [r["question"] for r in srv.requests]
    assert plain.endswith(f"Answer: {answer_for(Q)}") and "Code:" not in plain
    assert "Code:" in agent and "print(" in agent and "final_answer" not in agent
    assert f"final_answer({answer_for(Q)!r})" in later
    assert recorded == [Q, Q, Q]  # the longest known question wins over "How many legs?"


def test_unknown_question_stands_for_the_whole_user_turn():
    with StandinServer() as srv:
        reply = ask(srv.url, {"messages": [{"role": "user", "content": "  2 + 2?  "}], "stop": ["x"],
                              "n": 1})
        assert srv.requests[-1]["question"] == "2 + 2?"
    assert "Code:" in reply


def test_collect_with_prompts_in_other_words(tmp_path):
    """Prompts that never say "Task:", "Begin your first Thought" or "step by step": the answers are still
    the expected ones, and the FTP pass is still told apart (it gets the chain-of-thought reply)."""
    questions = [f"Quelle est la réponse numéro {i} ?" for i in range(4)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "question": q, "answer": "x"}) + "\n"
                                                  for i, q in enumerate(questions)))
    (tmp_path / "agent.yaml").write_text(
        "name: agent\nsystem: |\n  Résous le problème avec du code Python.\nuser: |\n  Problème >>> {{ question }} <<<\n")
    (tmp_path / "cot.yaml").write_text("name: cot\nsystem: |\n  Réfléchis.\nuser: |\n  Q = {{ question }}\n")
    with StandinServer(questions=questions, actions=1) as srv:
        cfg = CollectConfig.model_validate({
            "tasks": {"path": str(tmp_path / "tasks.jsonl")},
            "teacher": {"model": "openai/standin", "api_base": srv.url, "timeout_s": 5.0},
            "agent": {"ftp": True, "prompt": str(tmp_path / "agent.yaml"), "ftp_prompt": str(tmp_path / "cot.yaml")},
            "tools": {"search": None},
            "samples": 1,
            "concurrency": 4,
        })
        collect(cfg, tmp_path / "run", progress=False)
        plain = [r for r in srv.requests if not r["body"].get("stop")
                 and not any(m["role"] == "assistant" for m in r["body"]["messages"])]
    rows = list(iter_jsonl(tmp_path / "run" / "trajectories.jsonl"))
    assert len(rows) == 4
    for r in rows:
        assert r["status"] == "ok" and r["final_answer"] == answer_for(r["task"]["question"])
        assert r["provenance"]["extra"]["ftp_first_pass"].endswith(f"Answer: {answer_for(r['task']['question'])}")
        assert len(r["steps"]) == 2  # one printing action, then final_answer
    assert sorted(r["question"] for r in plain) == sorted(questions)  # one FTP pass per task
