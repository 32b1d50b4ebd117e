"""The LLM judge against a real HTTP stand-in (OpenAI-compatible, on 127.0.0.1) with scripted judge replies."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from importlib import resources

import pytest

from agentkd.core.jsonl import JsonlStore, iter_jsonl
from agentkd.core.types import Task, Trajectory
from agentkd.models.config import ModelConfig
from agentkd.models.wrappers import ClientConfig
from agentkd.score.config import JudgeConfig
from agentkd.score.judge import load_prompt, parse_verdict
from agentkd.score.run import score_run
from agentkd.score.store import read_scores
from agentkd.testing import StandinServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class JudgeStandin(StandinServer):
    """The stand-in server answering every chat completion with `reply(body)`."""

    def __init__(self, reply, **kw):
        super().__init__(**kw)
        self.reply = reply

    def _completion(self, body):
        text = self.reply(body)
        return json.dumps({"id": "j", "object": "chat.completion", "created": int(time.time()), "model": "judge",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}}).encode()


def response_of(body) -> str:
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return user.split("Response: ", 1)[1].strip()


REPLIES = {
    "JFK": '{"explanation": "JFK is an alias of John F. Kennedy.", "correct": 1}',
    "Richard Nixon": 'Thinking... the gold is Kennedy.\n```json\n{"explanation": "Different person.", "correct": 0}\n```',
    "either Kennedy or Johnson": '{"correct": "no", "explanation": "Hedges between two people."}',
    "Lyndon Johnson": "correct: false, explanation: \"wrong president\"",
}


def scripted(body) -> str:
    resp = response_of(body)
    retried = any("could not be read" in m["content"] for m in body["messages"] if m["role"] == "user")
    if resp == "J. F. Kennedy":  # garbage first, a verdict once reminded of the format
        return '{"explanation": "Same person.", "correct": 1}' if retried else "Sure! Happy to help."
    if resp == "Kennedy?":
        return "I cannot decide."  # never a verdict
    return REPLIES[resp]


def make_run(path, preds):
    with JsonlStore(path / "trajectories.jsonl") as store:
        for i, p in enumerate(preds):
            store.append(Trajectory(task=Task(id=f"q{i}", question="Which US president was shot in Dallas in 1963?",
                                              answer=["John F. Kennedy", "John Kennedy"], source="hotpotqa"),
                                    final_answer=p, status="ok"))
        store.append(Trajectory(task=Task(id="m", question="1+1?", answer="2", domain="math", source="math500"),
                                final_answer="2", status="ok"))
        store.append(Trajectory(task=Task(id="n", question="?", answer=None), final_answer="x", status="ok"))
    return path


def judge_cfg(srv, **client) -> JudgeConfig:
    return JudgeConfig(model=ModelConfig(model="openai/judge", api_base=srv.url),
                       client=ClientConfig(backoff_s=0.01, max_backoff_s=0.05, **client))


def test_prompt_is_data_and_its_hash_is_the_file_s():
    p = load_prompt()
    ref = resources.files("agentkd.score").joinpath("prompts").joinpath("judge.yaml")
    assert p.hash == hashlib.sha256(ref.read_bytes()).hexdigest()[:16]
    assert "{question}" in p.user and "{prediction}" in p.user and "hedge" in p.system


@pytest.mark.parametrize("text, verdict, expl", [
    ('{"explanation": "ok", "correct": 1}', 1, "ok"),
    ('```json\n{"correct": 0, "explanation": "no"}\n```', 0, "no"),
    ('First {"correct": 0} then, on reflection: {"explanation": "alias", "correct": true}', 1, "alias"),
    ('{"explanation": "hedged", "correct": "No"}', 0, "hedged"),
    ("Correct: YES", 1, None),
    ('{"explanation": "x", "correct": 2}', None, None),
    ("The answer looks right to me.", None, None),
    ("", None, None),
])
def test_parse_verdict(text, verdict, expl):
    assert parse_verdict(text) == (verdict, expl)


def test_judge_scores_are_stored_with_model_and_prompt_hash_and_cached(tmp_path):
    run = make_run(tmp_path, ["JFK", "Richard Nixon", "either Kennedy or Johnson", "Lyndon Johnson"])
    with JudgeStandin(scripted) as srv:
        s = score_run(run, judge=judge_cfg(srv), progress=False)
        assert (s.scored_new, s.judged_new, len(srv.requests)) == (6, 4, 4)  # math and no-gold not judged
        scores = read_scores(run)
        jfk = scores[("hotpotqa/q0", 0)]
        assert jfk.correct == 1.0 and jfk.metrics["em"] == 0.0 and jfk.metrics["judge"] == 1.0
        assert jfk.judge == {"model": "openai/judge", "prompt_hash": load_prompt().hash, "verdict": 1,
                             "explanation": "JFK is an alias of John F. Kennedy."}
        assert [scores[(f"hotpotqa/q{i}", 0)].correct for i in (1, 2, 3)] == [0.0, 0.0, 0.0]
        assert scores[("hotpotqa/q2", 0)].judge["explanation"] == "Hedges between two people."
        assert scores[("hotpotqa/q3", 0)].judge["explanation"] == "wrong president"
        assert scores[("math500/m", 0)].judge is None and scores[("n", 0)].correct is None
        assert s.metrics["judge"] == {"n": 4, "mean": 0.25}
        # rerun: every verdict is there, nothing is asked
        s = score_run(run, judge=judge_cfg(srv), progress=False)
        assert (s.scored_new, s.judged_new, s.already_scored, len(srv.requests)) == (0, 0, 6, 4)
        # scores lost: everything is scored again, the judge's answers come from RUN/judge_cache.sqlite
        (run / "scores.jsonl").unlink()
        s = score_run(run, judge=judge_cfg(srv), progress=False)
        assert (s.scored_new, s.judged_new, len(srv.requests)) == (6, 4, 4)
        assert read_scores(run)[("hotpotqa/q0", 0)].judge["explanation"] == "JFK is an alias of John F. Kennedy."
        # another judge model: its verdicts are asked for and stored, under its name
        other = judge_cfg(srv).model_copy(update={"model": ModelConfig(model="openai/judge-2", api_base=srv.url)})
        s = score_run(run, judge=other, progress=False)
        assert (s.scored_new, s.judged_new, len(srv.requests)) == (0, 4, 8)
        assert read_scores(run)[("hotpotqa/q0", 0)].judge["model"] == "openai/judge-2"
        # another prompt file (here: the same text plus a comment, so the requests are the cached ones)
        ref = resources.files("agentkd.score").joinpath("prompts").joinpath("judge.yaml")
        (run / "my_judge.yaml").write_bytes(ref.read_bytes() + b"# my copy\n")
        mine = other.model_copy(update={"prompt": str(run / "my_judge.yaml")})
        s = score_run(run, judge=mine, progress=False)
        assert (s.judged_new, len(srv.requests)) == (4, 8)
        assert read_scores(run)[("hotpotqa/q0", 0)].judge["prompt_hash"] == load_prompt(run / "my_judge.yaml").hash
        assert load_prompt(run / "my_judge.yaml").hash != load_prompt().hash


def test_judge_added_to_already_scored_run_and_malformed_replies(tmp_path):
    run = make_run(tmp_path, ["J. F. Kennedy", "Kennedy?", "John Kennedy"])
    s = score_run(run, progress=False)  # first without a judge
    assert s.scored_new == 5 and read_scores(run)[("hotpotqa/q2", 0)].correct == 1.0
    with JudgeStandin(lambda b: '{"explanation": "same", "correct": 1}' if response_of(b) == "John Kennedy"
                      else scripted(b)) as srv:
        s = score_run(run, judge=judge_cfg(srv), progress=False)
        assert (s.scored_new, s.judged_new) == (0, 3)
        scores = read_scores(run)
        fixed = scores[("hotpotqa/q0", 0)]  # garbage, then a verdict after the reminder
        assert fixed.correct == 1.0 and fixed.judge["verdict"] == 1
        stuck = scores[("hotpotqa/q1", 0)]  # never a verdict: recorded, not scored wrong by the judge
        assert stuck.judge["verdict"] is None and "no verdict in 3 replies" in stuck.judge["error"]
        assert stuck.judge["raw"] == "I cannot decide." and "judge" not in stuck.metrics
        assert stuck.correct == stuck.metrics["em"] == 0.0 and "no verdict" in stuck.reason
        assert sum(response_of(r["body"]) == "Kennedy?" for r in srv.requests) == 3
        # the file keeps the plain score line and appends the judged one; the last line wins
        assert sum(1 for o in iter_jsonl(run / "scores.jsonl") if o["key"][0] == "hotpotqa/q0") == 2


def test_server_errors_are_retried_by_the_client_stack(tmp_path):
    run = make_run(tmp_path, ["JFK", "Richard Nixon", "either Kennedy or Johnson", "Lyndon Johnson"])
    with JudgeStandin(scripted, faults={"500": 0.3, "malformed": 0.2}, seed=3) as srv:
        s = score_run(run, judge=judge_cfg(srv), progress=False)
        assert any(r["fault"] for r in srv.requests)  # some requests did fail...
        assert s.judged_new == 4 and s.metrics["judge"]["n"] == 4  # ...and every verdict arrived


def test_judge_budget_stops_the_run_and_keeps_what_was_judged(tmp_path):
    run = make_run(tmp_path, ["JFK", "Richard Nixon", "either Kennedy or Johnson", "Lyndon Johnson"])
    with JudgeStandin(scripted) as srv:  # 50 prompt tokens at $1000/M = $0.05 a call; budget $0.08
        cfg = judge_cfg(srv, max_concurrency=1, budget_usd=0.08, price_in_per_mtok=1000.0)
        s = score_run(run, judge=cfg, progress=False)
        assert (s.stopped, s.judged_new, len(srv.requests)) == ("budget", 2, 2)
        assert sum(r.judge is not None for r in read_scores(run).values()) == 2
        # a larger budget: the rest is judged, what was paid for is not asked again
        cfg = judge_cfg(srv, max_concurrency=1, budget_usd=1.0, price_in_per_mtok=1000.0)
        s = score_run(run, judge=cfg, progress=False)
        assert (s.stopped, s.judged_new, len(srv.requests)) == (None, 2, 4)


def test_cli_judge_flag(tmp_path):
    run = make_run(tmp_path, ["JFK"])
    with JudgeStandin(scripted) as srv:
        env = {**os.environ, "PYTHONPATH": REPO}
        out = subprocess.run([sys.executable, "-m", "agentkd", "score", str(run), "--judge", "openai/judge",
                              "--judge-api-base", srv.url, "-q"], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "judge" in out.stderr and "openai/judge" in out.stderr and len(srv.requests) == 1
    assert read_scores(run)[("hotpotqa/q0", 0)].correct == 1.0
