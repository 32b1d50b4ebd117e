"""The CodeAct loop with a scripted model and a real sandbox: FTP prefill/fallback, parsing, max steps, errors."""

from __future__ import annotations

import pytest

from agentkd.agent import AgentConfig, run_episode
from agentkd.agent.parse import FORMAT_HELP, first_paragraph, last_boxed, parse_action, parse_final_reply
from agentkd.core.messages import from_chat_record, to_chat_record, to_messages
from agentkd.core.types import Task
from agentkd.models import ModelError
from agentkd.sandbox import Sandbox, SandboxConfig
from agentkd.testing import ScriptedModel
from agentkd.tools import ToolsConfig, build_tools

TASK = Task(id="t1", question="What is 6 times 7?", answer="42", domain="math", source="unit")
COT = "Six times seven is forty-two.\n\nSo the answer is 42.\nAnswer: 42"
ACT1 = " I will compute it.\nCode:\n```py\nx = 6 * 7\nprint(x)\n```"
ACT2 = "Thought: x holds the product.\nCode:\n```py\nfinal_answer(x)\n```"


@pytest.fixture(scope="module")
def tools():
    return build_tools(ToolsConfig(search=None))


@pytest.fixture
def sandbox(tools):
    with Sandbox(SandboxConfig(), tools=tools) as sb:
        yield sb


async def test_ftp_prefix_is_prefilled_and_logged(sandbox, tools):
    model = ScriptedModel([COT, ACT1, ACT2])
    traj = await run_episode(TASK, model, sandbox, tools, AgentConfig(ftp=True), sampling={"temperature": 0.5},
                             seed=3)
    assert traj.status == "ok" and traj.final_answer == 42
    prefix = "Six times seven is forty-two."
    assert model.calls[1]["prefill"] == "Thought: " + prefix
    first = traj.steps[0]
    assert first.prefix == prefix and first.model_output.startswith("Thought: " + prefix + " I will compute it.")
    assert first.model_output.endswith("```<end_code>") and first.code == "x = 6 * 7\nprint(x)"
    assert first.observation == "42"
    assert traj.steps[1].is_final and traj.steps[1].final_answer == 42
    p = traj.provenance
    assert (p.prefix_mode, p.prefix_text, p.seed, p.sandbox_backend) == ("prefill", prefix, 3, sandbox.backend)
    assert p.extra["ftp_first_pass"] == COT and p.prompt_id.startswith("codeact_teacher@")
    assert p.tools == ["final_answer"] and p.agentkd_version and p.finished_at >= p.started_at
    # each call used its own seed; stop sequences were sent
    assert [c["seed"] for c in model.calls] == [3 + 99000, 3, 1003]
    assert model.calls[1]["stop"] == ["<end_code>", "\nObservation:"]
    # what the student trains on keeps the prefix in the first assistant turn
    msgs = to_messages(traj)
    assert msgs[2]["role"] == "assistant" and msgs[2]["content"].startswith("Thought: " + prefix)
    assert from_chat_record(to_chat_record(traj)) == traj


async def test_ftp_fallback_without_prefill(sandbox, tools):
    model = ScriptedModel([COT, "Thought: Six times seven is forty-two." + ACT1, ACT2], supports_prefill=False)
    traj = await run_episode(TASK, model, sandbox, tools, AgentConfig(ftp=True))
    assert traj.provenance.prefix_mode == "fallback"
    assert all(c["prefill"] is None for c in model.calls)
    assert "Begin your first Thought with exactly this text" in traj.user_prompt
    assert "Six times seven is forty-two." in model.calls[1]["messages"][1]["content"]
    assert traj.steps[0].prefix == "Six times seven is forty-two." and traj.status == "ok"


async def test_missing_code_block_and_code_errors_are_observations(sandbox, tools):
    model = ScriptedModel(["Thought: I think it is 42.", "Thought: try\nCode:\n```py\nprint(1/0)\n```", ACT1, ACT2])
    traj = await run_episode(TASK, model, sandbox, tools, AgentConfig(max_steps=5))
    assert traj.steps[0].error == "no code block found" and traj.steps[0].observation == FORMAT_HELP
    assert "ZeroDivisionError" in traj.steps[1].observation and "ZeroDivisionError" in traj.steps[1].error
    assert traj.status == "ok" and traj.final_answer == 42 and len(traj.steps) == 4


async def test_max_steps_then_final_answer_call(sandbox, tools):
    model = ScriptedModel([ACT1, "Thought: again\nCode:\n```py\nprint(x + 1)\n```", "Final answer: 42."])
    traj = await run_episode(TASK, model, sandbox, tools, AgentConfig(max_steps=2))
    assert traj.status == "max_steps" and traj.final_answer == "42"
    assert traj.steps[1].observation.startswith("43\n\nYou have used all your steps")
    assert traj.steps[2].is_final and traj.steps[2].code is None
    assert model.calls[-1]["messages"][-1]["content"].startswith("Observation:\n43")


async def test_model_error_ends_episode_as_error(sandbox, tools):
    def boom(messages, prefill):
        raise ModelError("upstream exploded", retryable=False)

    traj = await run_episode(TASK, ScriptedModel(boom), sandbox, tools, AgentConfig())
    assert traj.status == "error" and "upstream exploded" in traj.status_reason and traj.final_answer is None


def test_parse_action_variants():
    a = parse_action("Thought: add\nCode:\n```py\nprint(1+1)\n```<end_code>")
    assert (a.thought, a.code, a.error) == ("add", "print(1+1)", None)
    assert parse_action("Thought: x\n```python\na = 1\n```\nand\n```py\nprint(a)\n```").code == "a = 1\n\nprint(a)"
    assert parse_action("Thought: open block\n```py\nprint(2)\n").code == "print(2)"
    assert parse_action("just words").code is None


def test_answer_helpers():
    assert first_paragraph("\n\nFirst para\nline 2\n\nSecond") == "First para\nline 2"
    assert parse_final_reply("blah\nFinal answer: Paris.") == "Paris"
    assert parse_final_reply("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{a} then \\boxed{{b}+1}") == "{b}+1"


async def test_prompt_shots_and_action_prefill(sandbox, tools):
    """A prompt's few-shot turns go between the system message and the task; agent.prefill starts every action
    (and stays in the logged turn); an action stopped inside its code block is logged with the block closed."""
    from agentkd.agent.prompts import load_shots, prompt_id

    model = ScriptedModel([" I compute it.\nCode:\n```py\nx = 6 * 7\nprint(x)", " Done.\nCode:\n```py\nfinal_answer(x)\n```"])
    cfg = AgentConfig(prompt="codeact_quickstart", prefill="Thought:", stop=["<end_code>", "\n```\n"])
    traj = await run_episode(TASK, model, sandbox, tools, cfg)
    assert traj.status == "ok" and traj.final_answer == 42
    shots = load_shots("codeact_quickstart")
    sent = model.calls[0]["messages"]
    assert len(sent) == 2 + len(shots) and [m["role"] for m in sent[1:-1]] == [r for r, _ in shots]
    assert sent[-1]["content"] == "Task: What is 6 times 7?" and sent[1]["content"] == shots[0][1].strip()
    assert [c["prefill"] for c in model.calls] == ["Thought:", "Thought:"]
    assert traj.steps[0].model_output == "Thought: I compute it.\nCode:\n```py\nx = 6 * 7\nprint(x)\n```<end_code>"
    p = traj.provenance
    assert p.extra["shots"] == len(shots) and p.extra["action_prefill"] == "Thought:"
    assert p.prompt_id == prompt_id("codeact_quickstart") and p.prompt_id.startswith("codeact_quickstart@")
    # the trajectory keeps the task's own turns: shots are the teacher's, not the student's
    assert to_messages(traj)[1] == {"role": "user", "content": "Task: What is 6 times 7?"}
    # a model that cannot be prefilled gets no prefill (and none is recorded)
    plain = ScriptedModel(["Thought: go\nCode:\n```py\nfinal_answer(42)\n```"], supports_prefill=False)
    traj = await run_episode(TASK, plain, sandbox, tools, cfg)
    assert plain.calls[0]["prefill"] is None and "action_prefill" not in traj.provenance.extra and traj.status == "ok"
    assert load_shots("codeact_teacher") == () and prompt_id("codeact_teacher").startswith("codeact_teacher@")
