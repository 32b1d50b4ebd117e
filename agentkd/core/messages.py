"""Trajectory <-> OpenAI chat messages.

`to_messages` gives the plain chat an SFT dataset trains on: system, user, then for every step the
assistant's raw output followed by a user turn holding the observation (none after the final step).

`to_chat_record` / `from_chat_record` are the lossless pair: the record is `{"messages": [...],
"trajectory": {...}}` where `trajectory` holds everything the messages do not (task, step fields,
provenance, scores). Text lives only in the messages, so editing a message edits the trajectory.
"""

from __future__ import annotations

from typing import Any

from agentkd.core.types import Step, Task, Trajectory

OBSERVATION_PREFIX = "Observation:\n"


def observation_message(observation: str) -> dict[str, str]:
    return {"role": "user", "content": OBSERVATION_PREFIX + observation}


def to_messages(traj: Trajectory) -> list[dict[str, str]]:
    msgs: list[dict[str, str]] = []
    if traj.system_prompt is not None:
        msgs.append({"role": "system", "content": traj.system_prompt})
    if traj.user_prompt is not None:
        msgs.append({"role": "user", "content": traj.user_prompt})
    for step in traj.steps:
        msgs.append({"role": "assistant", "content": step.model_output})
        if step.observation is not None:
            msgs.append(observation_message(step.observation))
    return msgs


_TEXT_FIELDS = {"model_output", "observation"}


def to_chat_record(traj: Trajectory) -> dict[str, Any]:
    data = traj.model_dump(mode="json")
    data.pop("system_prompt")
    data.pop("user_prompt")
    data["has_system"] = traj.system_prompt is not None
    data["has_user"] = traj.user_prompt is not None
    for s in data["steps"]:
        s["has_observation"] = s["observation"] is not None
        for k in _TEXT_FIELDS:
            s.pop(k)
    return {"messages": to_messages(traj), "trajectory": data}


def from_chat_record(record: dict[str, Any]) -> Trajectory:
    msgs = list(record["messages"])
    meta = dict(record["trajectory"])
    steps_meta = [dict(s) for s in meta.pop("steps")]
    i = 0

    def take(role: str) -> str:
        nonlocal i
        if i >= len(msgs) or msgs[i]["role"] != role:
            got = msgs[i]["role"] if i < len(msgs) else "end of messages"
            raise ValueError(f"chat record: expected a {role!r} message at position {i}, got {got!r}")
        content = msgs[i]["content"]
        i += 1
        return content

    system = take("system") if meta.pop("has_system") else None
    user = take("user") if meta.pop("has_user") else None
    steps = []
    for s in steps_meta:
        s["model_output"] = take("assistant")
        obs = None
        if s.pop("has_observation"):
            content = take("user")
            if not content.startswith(OBSERVATION_PREFIX):
                raise ValueError(f"chat record: observation message {i - 1} lacks the {OBSERVATION_PREFIX!r} prefix")
            obs = content[len(OBSERVATION_PREFIX):]
        s["observation"] = obs
        steps.append(Step.model_validate(s))
    if i != len(msgs):
        raise ValueError(f"chat record: {len(msgs) - i} messages left over after the last step")
    return Trajectory.model_validate({**meta, "system_prompt": system, "user_prompt": user, "steps": steps})


def from_messages(messages: list[dict[str, str]], task: Task) -> Trajectory:
    """Build a trajectory from plain chat messages (e.g. an exported dataset); step details beyond the
    text (thought/code split, tokens, provenance) are not recoverable from plain chat and stay empty."""
    msgs = list(messages)
    system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else None
    user = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "user" else None
    steps: list[Step] = []
    for m in msgs:
        if m["role"] == "assistant":
            steps.append(Step(index=len(steps), model_output=m["content"]))
        elif m["role"] == "user" and steps and steps[-1].observation is None:
            c = m["content"]
            steps[-1].observation = c[len(OBSERVATION_PREFIX):] if c.startswith(OBSERVATION_PREFIX) else c
        else:
            raise ValueError(f"unexpected {m['role']!r} message after step {len(steps)}")
    return Trajectory(task=task, system_prompt=system, user_prompt=user, steps=steps)
