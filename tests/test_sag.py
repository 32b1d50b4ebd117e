"""SAG on a real sandbox with scripted candidates: parsing, forked state, voting by outcome, the tie-break."""

from __future__ import annotations

import pytest

from agentkd.agent.config import AgentConfig, SagConfig
from agentkd.agent.loop import run_episode
from agentkd.agent.sag import Candidate, sag_action, vote
from agentkd.core.types import Task
from agentkd.models.base import ChatModel, Completion, Usage
from agentkd.sandbox import Sandbox, SandboxConfig
from agentkd.testing import ScriptedModel

pytestmark = pytest.mark.asyncio


def act(code: str, thought: str = "go") -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```"  # the stop sequence <end_code> is cut off anyway


@pytest.fixture
def sandbox():
    with Sandbox(SandboxConfig(timeout_s=5)) as sb:
        yield sb


def cfg(n: int, **kw) -> AgentConfig:
    return AgentConfig(prompt="codeact_student", max_steps=3, sag=SagConfig(n=n, **kw))


MATH = Task(id="m1", question="2+2?", answer="4", domain="math")
FACT = Task(id="f1", question="capital of France?", answer="Paris", domain="factual")


async def test_unparsable_dropped_majority_by_outcome_and_forked_state(sandbox):
    sandbox.run("base = 1")
    cands = [
        "I will just answer without code.",                                   # unparsable: dropped
        act("lose = 'a'\nopen('lose.txt', 'w').write('x')\nprint(base + 2)"),  # observation "3": minority
        act("win = 'b'\nprint(base * 2)"),                                    # observation "2"
        act("win = 'c'\nprint(2)"),                                           # observation "2"
        act("1/0"),                                                           # raises: dropped
    ]
    model = ScriptedModel([cands])
    pick = await sag_action([{"role": "user", "content": "q"}], model, sandbox, cfg(5), domain="factual", seed=1)
    rec = pick.record
    assert [c["outcome"] for c in rec["candidates"]] == ["unparsable", "observation", "observation",
                                                          "observation", "error"]
    assert rec["valid"] == 3 and rec["vote"] == "split" and rec["winner"] == 2 and rec["tie_break"] is None
    assert [g["members"] for g in rec["groups"]] == [[1], [2, 3]]
    assert pick.output == cands[2] and pick.result.stdout == "2\n"
    assert model.calls[0]["n"] == 5 and model.calls[0]["temperature"] == 0.4 and model.calls[0]["top_p"] == 0.8
    # the winner's fork was committed: its assignment is visible, the loser's is not, nor is the loser's file
    assert sandbox.run("win").value == "'b'"
    assert "NameError" in sandbox.run("lose").error
    assert sandbox.run("import os\nsorted(os.listdir('.'))").value == "[]"


async def test_final_answers_vote_by_value_on_math(sandbox):
    cands = [act("print(4)"), act("final_answer(4)"), act("print(4)"), act("final_answer('4.0')"),
             act("final_answer(4.0)")]
    pick = await sag_action([{"role": "user", "content": "q"}], ScriptedModel([cands]), sandbox, cfg(5),
                            domain="math", seed=0)
    rec = pick.record
    assert rec["vote"] == "split" and [g["members"] for g in rec["groups"]] == [[0, 2], [1, 3, 4]]
    assert rec["winner"] == 1 and pick.result.is_final and pick.result.final_answer == 4


async def test_final_answers_vote_by_normalised_text_on_factual(sandbox):
    cands = [act("final_answer('Paris')"), act("final_answer('the  paris.')"), act("final_answer('Lyon')")]
    pick = await sag_action([{"role": "user", "content": "q"}], ScriptedModel([cands]), sandbox, cfg(3),
                            domain="factual", seed=0)
    assert [g["members"] for g in pick.record["groups"]] == [[0, 1], [2]] and pick.record["winner"] == 0


async def test_tie_break_earliest_then_by_logprob(sandbox):
    cands = [act("print('x')"), act("print('y')"), act("print('y')"), act("print('x')")]
    pick = await sag_action([{"role": "user", "content": "q"}], ScriptedModel([cands]), sandbox, cfg(4),
                            domain="factual", seed=0)
    assert pick.record["tie_break"] == "earliest" and pick.record["winner"] == 0

    class WithLogprobs(ChatModel):
        async def _generate(self, messages, *, n, **kw):
            lps = [[-2.0, -2.0], [-0.5, -0.1], [-0.3, -0.3], [-1.0, -1.0]]
            return [Completion(text=t, logprobs=lp, usage=Usage(prompt_tokens=3, completion_tokens=2))
                    for t, lp in zip(cands, lps, strict=True)]

    pick = await sag_action([{"role": "user", "content": "q"}], WithLogprobs(), sandbox, cfg(4),
                            domain="factual", seed=0)
    # group x: mean(-2, -1) = -1.5; group y: mean(-0.3, -0.3) = -0.3 -> y, represented by its earliest member
    assert pick.record["tie_break"] == "logprob" and pick.record["winner"] == 1
    # logprobs only for some candidates: no logprob tie-break
    tied = [Candidate(0, "a", "c", logprob=None, key="k1"), Candidate(1, "b", "c", logprob=-0.1, key="k2")]
    assert vote(tied).winner == 0 and vote(tied).tie_break == "earliest"


async def test_all_failed_first_error_is_observation_state_unchanged(sandbox):
    sandbox.run("x = 1")
    cands = ["no code here", act("x = 2\nraise ValueError('first')"), act("x = 3\nraise KeyError('second')")]
    pick = await sag_action([{"role": "user", "content": "q"}], ScriptedModel([cands]), sandbox, cfg(3),
                            domain="factual", seed=0)
    assert pick.record["vote"] == "none" and pick.record["winner"] is None
    assert pick.output == cands[1] and "ValueError: first" in pick.result.error
    assert sandbox.run("x").value == "1"


async def test_backend_without_n_gets_parallel_requests(sandbox):
    calls = []

    class OneChoice(ChatModel):  # ignores n, like some litellm providers
        async def _generate(self, messages, *, n, seed, **kw):
            calls.append(seed)
            return [Completion(text=act(f"print({len(calls)})"))]

    pick = await sag_action([{"role": "user", "content": "q"}], OneChoice(), sandbox, cfg(3), domain="factual", seed=10)
    assert sorted(calls) == [10, 11, 12] and pick.record["requests"] == 3 and len(pick.record["candidates"]) == 3


async def test_episode_loop_with_sag_records_every_step(sandbox):
    step1 = [act("a = 5\nprint(a)"), act("a = 6\nprint(a)"), act("a = 5\nprint(a)")]
    step2 = [act("final_answer(a)"), "garbage", act("final_answer(str(a) + '.0')")]
    model = ScriptedModel([step1, step2])
    traj = await run_episode(MATH, model, sandbox, {}, cfg(3))
    assert traj.status == "ok" and traj.final_answer == 5
    assert [s.extra["sag"]["vote"] for s in traj.steps] == ["split", "unanimous"]
    assert traj.steps[0].observation == "5" and traj.steps[1].extra["sag"]["candidates"][1]["outcome"] == "unparsable"
    assert traj.provenance.sampling["sag"]["n"] == 3
