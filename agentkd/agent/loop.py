"""The CodeAct episode loop: Thought + code action → sandbox → Observation, until final_answer or max steps.

    traj = await run_episode(task, model, sandbox, tools, AgentConfig(ftp=True), sampling={"temperature": 0.7})

With `cfg.sag.n > 1` each step is a self-consistent action generation (`agentkd.agent.sag`): N candidates,
each run on its own fork of the sandbox state, the outcome vote's winner committed.

With `ftp=True` the teacher first answers with plain chain of thought; the first paragraph of that answer
becomes the start of the first Thought (assistant prefill where the model supports it, else the
documented fallback: the user turn asks the model to begin its first Thought with that text). The
prefix stays in the logged first assistant turn, so a student trained on it learns to produce it.

A prompt's few-shot turns (`shots`) go between the system message and the task; `cfg.prefill` (e.g.
"Thought:") starts every action where the model can be prefilled. An action that stopped on a stop sequence
inside its code block (e.g. the closing fence followed by a newline) is logged with the block closed, so
every logged action has the format a student should learn.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from agentkd import __version__
from agentkd.agent.config import AgentConfig
from agentkd.agent.parse import FORMAT_HELP, first_paragraph, parse_action, parse_final_reply
from agentkd.agent.prompts import prompt_id, render, render_shots
from agentkd.agent.sag import sag_action
from agentkd.core.messages import observation_message
from agentkd.core.types import Provenance, Step, Task, Trajectory
from agentkd.models.base import ChatModel, Completion, FatalModelError, ModelError
from agentkd.models.wrappers import BudgetExceeded
from agentkd.sandbox.executor import CodeExecutor
from agentkd.tools.base import render_tools

FALLBACK_INSTRUCTION = "\n\nBegin your first Thought with exactly this text and continue from it:\n{prefix}"


def _seed(seed: int | None, call: int) -> int | None:
    return None if seed is None else seed + 1000 * call


async def first_thought_prefix(task: Task, model: ChatModel, cfg: AgentConfig, *, sampling: Mapping[str, Any],
                               seed: int | None) -> tuple[str, Completion]:
    """FTP pass 1: a plain CoT answer; returns (its first paragraph, the completion)."""
    msgs = [{"role": "system", "content": render(cfg.ftp_prompt, "system", domain=task.domain)},
            {"role": "user", "content": render(cfg.ftp_prompt, "user", question=task.question, domain=task.domain)}]
    params = {k: v for k, v in sampling.items() if k in ("temperature", "top_p")}
    [comp] = await model.generate(msgs, n=1, max_tokens=cfg.ftp_max_tokens, seed=_seed(seed, 99), **params)
    return first_paragraph(comp.text), comp


async def run_episode(
    task: Task,
    model: ChatModel,
    sandbox: CodeExecutor,
    tools: Mapping[str, Any],
    cfg: AgentConfig,
    *,
    sampling: Mapping[str, Any] | None = None,
    seed: int | None = None,
    sample_index: int = 0,
    executor: Executor | None = None,
) -> Trajectory:
    """Run one episode. Model failures that survive the model's own retries end it with status=error
    (an infrastructure failure, not an answer); `BudgetExceeded` and `FatalModelError` (no retry can fix
    it: credentials, unknown model, bad request) propagate to the caller."""
    sampling = dict(sampling or {})
    tool_list = list(tools.values())

    values = {"tools": render_tools(tool_list), "tool_names": [t.name for t in tool_list], "domain": task.domain,
              "max_steps": cfg.max_steps, "question": task.question}
    system = render(cfg.prompt, "system", **values)
    user = render(cfg.prompt, "user", **values)
    desc = model.describe()
    prov = Provenance(model=desc.get("model"), provider=desc.get("provider"), api_base=desc.get("api_base"),
                      extra={k: v for k, v in desc.items() if k not in ("model", "provider", "api_base")},
                      sampling={**sampling, "stop": cfg.stop,
                                **({"sag": cfg.sag.model_dump()} if cfg.sag.n > 1 else {})}, seed=seed,
                      sample_index=sample_index, prompt_id=prompt_id(cfg.prompt),
                      sandbox_backend=sandbox.backend, tools=[t.name for t in tool_list],
                      agentkd_version=__version__, started_at=time.time())
    prov.tools_config_hash = _tools_hash(tool_list)
    traj = Trajectory(task=task, system_prompt=system, user_prompt=user, provenance=prov)

    prefix = None
    ftp_cost = 0.0
    if cfg.ftp:
        try:
            prefix, cot = await first_thought_prefix(task, model, cfg, sampling=sampling, seed=seed)
        except (BudgetExceeded, FatalModelError):
            raise
        except ModelError as e:
            return traj.finish("error", f"model error in FTP first pass: {e}")
        ftp_cost = cot.cost_usd
        prov.extra["ftp_first_pass"] = cot.text
        prov.prefix_text = prefix
        use_prefill = cfg.ftp_mode == "prefill" or (cfg.ftp_mode == "auto" and model.supports_prefill)
        prov.prefix_mode = "prefill" if use_prefill else "fallback"
        if not use_prefill and prefix:
            traj.user_prompt = user = user + FALLBACK_INSTRUCTION.format(prefix=prefix)

    shots = render_shots(cfg.prompt, **values)
    if shots:
        prov.extra["shots"] = len(shots)
    action_prefill = cfg.prefill if cfg.prefill and model.supports_prefill else None
    if action_prefill:
        prov.extra["action_prefill"] = action_prefill
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, *shots, {"role": "user", "content": user}]
    params = {k: v for k, v in sampling.items() if k in ("temperature", "top_p", "max_tokens")}
    for i in range(cfg.max_steps):
        prefill = ("Thought: " + prefix) if (i == 0 and prefix and prov.prefix_mode == "prefill") else action_prefill
        t0 = time.perf_counter()
        pick = None
        try:
            if cfg.sag.n > 1:  # N candidates, each run on its own fork of the state; the vote's winner is committed
                pick = await sag_action(messages, model, sandbox, cfg, domain=task.domain, seed=_seed(seed, i),
                                        prefill=prefill, max_tokens=params.get("max_tokens"),
                                        timeout_s=cfg.code_timeout_s, executor=executor)
                comp, output = pick.completion, pick.output
            else:
                [comp] = await model.generate(messages, n=1, stop=cfg.stop, seed=_seed(seed, i), prefill=prefill,
                                              **params)
                output = (prefill or "") + comp.text
        except (BudgetExceeded, FatalModelError):
            raise
        except ModelError as e:
            return traj.finish("error", f"model error at step {i}: {e}")
        latency = time.perf_counter() - t0
        action = parse_action(output)
        if action.code is not None and output.count("```") % 2:  # stopped inside the block: close it
            output = output.rstrip() + "\n```"
        if action.code is not None and cfg.end_code and cfg.end_code not in output:
            output = output.rstrip() + cfg.end_code
        step = Step(index=i, model_output=output, thought=action.thought, code=action.code,
                    prefix=prefix if i == 0 and prefix else None, tokens_in=comp.usage.prompt_tokens,
                    tokens_out=comp.usage.completion_tokens, latency_s=latency,
                    cost_usd=comp.cost_usd + (ftp_cost if i == 0 else 0.0))
        if comp.cached:
            step.extra["cached"] = True
        if pick is not None:
            step.extra["sag"] = pick.record
        if action.code is None:
            step.error = action.error
            step.observation = FORMAT_HELP
        else:
            # the exchange with the worker runs on this loop: no thread per run (SAG ran its candidates already)
            result = pick.result if pick is not None and pick.result is not None else \
                await sandbox.arun(action.code, cfg.code_timeout_s, executor=executor)
            step.observation = result.observation(cfg.max_observation_chars)
            step.error = result.error or ("timed out" if result.timed_out else None)
            if result.is_final:
                step.is_final, step.final_answer = True, result.final_answer
                step.observation = None
                traj.steps.append(step)
                traj.final_answer = result.final_answer
                return traj.finish("ok")
        if i == cfg.max_steps - 1:
            step.observation += "\n\n" + render(cfg.final_step_prompt, "user")
        traj.steps.append(step)
        messages += [{"role": "assistant", "content": output}, observation_message(step.observation)]

    # out of steps: one last call for the answer, from the history
    t0 = time.perf_counter()
    try:
        [comp] = await model.generate(messages, n=1, seed=_seed(seed, cfg.max_steps), **params)
    except (BudgetExceeded, FatalModelError):
        raise
    except ModelError as e:
        return traj.finish("error", f"model error in the final-answer call: {e}")
    answer = parse_final_reply(comp.text)
    traj.steps.append(Step(index=cfg.max_steps, model_output=comp.text, is_final=True, final_answer=answer,
                           tokens_in=comp.usage.prompt_tokens, tokens_out=comp.usage.completion_tokens,
                           latency_s=time.perf_counter() - t0, cost_usd=comp.cost_usd))
    traj.final_answer = answer
    return traj.finish("max_steps", f"no final_answer() after {cfg.max_steps} steps; answer taken from a final reply")


def _tools_hash(tools: list[Any]) -> str:
    from agentkd.core.hashing import stable_hash

    return stable_hash({t.name: t.config_hash() if hasattr(t, "config_hash") else t.name for t in tools})
