"""Student rendering: a trajectory as the chat a student is trained on (and later evaluated with).

    msgs = student_messages(traj, prompt="codeact_student", tools_text=tools_text_for(["web_search", "final_answer"]))

* system = the student's short prompt (`codeact_student`: the tool listing, no few-shot examples), rendered
  with the same values the episode loop gives a prompt, so evaluation with `agent.prompt: codeact_student`
  and the same tools sees the same text; the teacher's few-shot system prompt is never copied.
* user = the student prompt's `user` part (the task only: the FTP fallback instruction a teacher may have
  seen is not the student's to see).
* then one assistant turn per step, its raw output (the first-thought prefix stays inside the first one, so
  the student learns to produce it), each followed by a user turn `Observation:\n...`; the final-answer step
  ends the chat (nothing after its code block).
"""

from __future__ import annotations

import functools
from typing import Any

from agentkd.core.messages import observation_message
from agentkd.core.types import Task, Trajectory

END_CODE = "<end_code>"
DEFAULT_MAX_STEPS = 5  # AgentConfig.max_steps' default


@functools.lru_cache(maxsize=64)
def _tools_text(names: tuple[str, ...], tools_json: str | None) -> str:
    import json

    from agentkd.core.config import ConfigError
    from agentkd.tools import ToolsConfig, build_tools, render_tools

    cfg = ToolsConfig.model_validate(json.loads(tools_json)) if tools_json else ToolsConfig()
    cfg = cfg.model_copy(update={"cache": None})  # the listing only: never open the tool-result cache
    built = build_tools(cfg)
    missing = [n for n in names if n not in built]
    if missing:
        raise ConfigError(f"tool {missing[0]!r} (in the trajectories' provenance.tools) is not in the tools config; "
                          "set curate.tools_text", path="tools")
    return render_tools(built[n] for n in names)


def tools_text_for(names: list[str] | tuple[str, ...], tools: Any = None) -> str:
    """The `{{ tools }}` text for these tool names, in this order, the way the episode loop renders it
    (`agentkd.tools.render_tools` over the tool registry). `tools`: a `ToolsConfig` or its dict (None: the
    default tool set); tool objects are built but never called (the search index is not opened)."""
    import json

    if tools is not None and not isinstance(tools, dict):
        tools = tools.model_dump(mode="json")
    return _tools_text(tuple(names), json.dumps(tools, sort_keys=True) if tools else None)


@functools.lru_cache(maxsize=256)
def _system(prompt: str, tools_text: str, tool_names: tuple[str, ...], domain: str, max_steps: int) -> str:
    from agentkd.agent.prompts import render

    return render(prompt, "system", tools=tools_text, tool_names=list(tool_names), domain=domain,
                  max_steps=max_steps, question="")


_Q = "\x00question\x00"


@functools.lru_cache(maxsize=256)
def _user_parts(prompt: str, tools_text: str, tool_names: tuple[str, ...], domain: str,
                max_steps: int) -> tuple[str, str] | None:
    """The user turn around `{{ question }}` when the template uses the question once, verbatim (then
    prefix + question + suffix is exactly what rendering gives, at a fraction of a Jinja render's cost)."""
    from agentkd.agent.prompts import load_prompt, render

    source = load_prompt(prompt).get("user", "")
    if source.count("question") != 1 or "{{ question }}" not in source:
        return None
    text = render(prompt, "user", tools=tools_text, tool_names=list(tool_names), domain=domain,
                  max_steps=max_steps, question=_Q)
    if text.count(_Q) != 1:
        return None
    head, _, tail = text.partition(_Q)
    return head, tail


def student_prompt(task: Task, *, prompt: str = "codeact_student", tools_text: str, tool_names: list[str],
                   max_steps: int = DEFAULT_MAX_STEPS) -> list[dict[str, str]]:
    """[system, user]: what the student sees before its first step."""
    names = tuple(tool_names)
    system = _system(prompt, tools_text, names, task.domain, max_steps)
    parts = _user_parts(prompt, tools_text, names, task.domain, max_steps)
    if parts is not None:
        user = (parts[0] + task.question + parts[1]).strip()
    else:
        from agentkd.agent.prompts import render

        user = render(prompt, "user", tools=tools_text, tool_names=list(names), domain=task.domain,
                      max_steps=max_steps, question=task.question)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _final_output(text: str) -> str:
    """A final step's output up to its code block's end marker: nothing after the answer is trained on."""
    cut = text.find(END_CODE)
    return text[: cut + len(END_CODE)] if cut >= 0 else text


def step_messages(traj: Trajectory) -> list[dict[str, str]]:
    """The assistant/observation turns: every step up to and including the first final-answer step."""
    out: list[dict[str, str]] = []
    for step in traj.steps:
        if step.is_final:
            out.append({"role": "assistant", "content": _final_output(step.model_output)})
            break
        out.append({"role": "assistant", "content": step.model_output})
        if step.observation is not None:
            out.append(observation_message(step.observation))
    return out


def student_messages(traj: Trajectory, *, prompt: str = "codeact_student", tools_text: str | None = None,
                     max_steps: int | None = None) -> list[dict[str, str]]:
    """The whole SFT chat of a trajectory in OpenAI format (see the module docstring). `tools_text` None:
    rendered from the default tool registry for `traj.provenance.tools`."""
    names = list(traj.provenance.tools) or ["final_answer"]
    text = tools_text if tools_text is not None else tools_text_for(names)
    head = student_prompt(traj.task, prompt=prompt, tools_text=text, tool_names=names,
                          max_steps=max_steps or DEFAULT_MAX_STEPS)
    return head + step_messages(traj)
