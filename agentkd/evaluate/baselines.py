"""The no-agent rows of a report, on the same engine as the agent: CoT and CoT+RAG episodes.

- `cot`: the `cot` prompt (think step by step, answer on the last line), greedy, up to
  `baselines.max_tokens` new tokens; the answer is read with `parse_final_reply` ("Answer: X", \\boxed{X}).
- `cot_rag`: the question is sent to the search tool once (top `baselines.rag_k` passages); the passages are
  put before the question, then the same CoT call.

Each is a one-step `Trajectory` (status ok), stored, resumed and scored like an agent's.
"""

from __future__ import annotations

import time
from typing import Any

from agentkd import __version__
from agentkd.agent.parse import parse_final_reply
from agentkd.agent.prompts import prompt_id, render
from agentkd.core.types import Provenance, Step, Task, Trajectory
from agentkd.engine import LocalEpisodes
from agentkd.engine.worker import EpisodeSpec
from agentkd.evaluate.config import BaselineConfig
from agentkd.models.base import ChatModel, FatalModelError, ModelError
from agentkd.models.wrappers import BudgetExceeded

RAG_USER = "Passages:\n{passages}\n\nQuestion: {question}"


async def cot_episode(task: Task, model: ChatModel, cfg: BaselineConfig, *, seed: int | None, sample_index: int,
                      passages: str | None = None) -> Trajectory:
    """One CoT answer as a trajectory; with `passages` (what retrieval returned for the question), CoT+RAG."""
    system = render(cfg.prompt, "system", domain=task.domain)
    question = render(cfg.prompt, "user", question=task.question, domain=task.domain)
    extra: dict[str, Any] = {}
    if passages is not None:
        extra["retrieved"] = passages
        question = RAG_USER.format(passages=passages, question=question)
    desc = model.describe()
    prov = Provenance(model=desc.get("model"), provider=desc.get("provider"),
                      sampling={"temperature": 0.0, "max_tokens": cfg.max_tokens}, seed=seed, sample_index=sample_index,
                      prompt_id=prompt_id(cfg.prompt), agentkd_version=__version__, started_at=time.time(),
                      extra={"method": "cot_rag" if passages is not None else "cot", **extra})
    traj = Trajectory(task=task, system_prompt=system, user_prompt=question, provenance=prov)
    t0 = time.perf_counter()
    try:
        [comp] = await model.generate([{"role": "system", "content": system}, {"role": "user", "content": question}],
                                      n=1, temperature=0.0, max_tokens=cfg.max_tokens, seed=seed)
    except (BudgetExceeded, FatalModelError):
        raise
    except ModelError as e:
        return traj.finish("error", f"model error in the CoT call: {e}")
    answer = parse_final_reply(comp.text)
    traj.steps.append(Step(index=0, model_output=comp.text, is_final=True, final_answer=answer,
                           tokens_in=comp.usage.prompt_tokens, tokens_out=comp.usage.completion_tokens,
                           latency_s=time.perf_counter() - t0, cost_usd=comp.cost_usd,
                           extra={"cached": True} if comp.cached else {}))
    traj.final_answer = answer
    return traj.finish("ok")


class BaselineEpisodes(LocalEpisodes):
    """`LocalEpisodes` whose episodes are CoT / CoT+RAG answers (the same client, cache, budget and runner)."""

    def __init__(self, *args: Any, method: str, baseline: BaselineConfig, **kw: Any):
        super().__init__(*args, **kw)
        self.method = method
        self.baseline = baseline
        self._search: Any = None

    async def start(self) -> None:
        await super().start()
        if self.method == "cot_rag":
            from agentkd.tools.search import SearchTool

            search = self.setup.tools.search
            assert search is not None  # EvalConfig checks it
            self._search = SearchTool(search.model_copy(update={"k": self.baseline.rag_k}))

    async def run(self, spec: EpisodeSpec) -> Trajectory:
        import asyncio

        passages = None
        if self._search is not None:  # once per question, off the event loop
            passages = await asyncio.get_running_loop().run_in_executor(self._executor, self._search.forward,
                                                                        spec.task.question)
        return await cot_episode(spec.task, self.model, self.baseline, seed=spec.seed, sample_index=spec.sample,
                                 passages=passages)
