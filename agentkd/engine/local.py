"""`LocalEpisodes`: an `EpisodeWorker` that runs episodes on this process's event loop.

One wrapped model client (cache ∘ budget ∘ retry ∘ rate limit ∘ provider) serves every episode; each
episode gets a fresh sandbox from a `SandboxPool`, started while its first model call is in flight and
closed a moment after it ends (`SandboxPool.acquire_ahead` / `release`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentkd.agent.config import AgentConfig
from agentkd.core.types import Trajectory
from agentkd.engine.folder import RunFolder
from agentkd.engine.worker import EpisodeSpec
from agentkd.models.config import ModelConfig
from agentkd.models.stats import ClientStats
from agentkd.models.wrappers import ClientConfig
from agentkd.sandbox.config import SandboxConfig
from agentkd.tools.config import ToolsConfig


@dataclass
class EpisodeSetup:
    """The resolved configuration every episode of a run shares."""

    model: ModelConfig
    agent: AgentConfig
    client: ClientConfig = field(default_factory=ClientConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    concurrency: int = 16
    model_key: str = "model"
    """Where the model is configured (`collect.teacher`): pre-flight errors name it."""
    tools_key: str = "tools"


class LocalEpisodes:
    def __init__(self, setup: EpisodeSetup, folder: RunFolder, *, progress: bool = True):
        self.setup = setup
        self.folder = folder
        self.progress = progress
        self.stats = ClientStats()
        self.model: Any = None
        self.tools: dict[str, Any] = {}
        self.pool: Any = None
        self._cache: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._sampling = setup.model.sampling.model_dump(exclude={"seed"})

    async def start(self) -> None:
        from agentkd.models.load import load_model
        from agentkd.models.preflight import preflight_model
        from agentkd.models.wrappers import RequestCache, wrap_model
        from agentkd.sandbox import SandboxPool
        from agentkd.tools import build_tools
        from agentkd.tools.preflight import preflight_tools

        s = self.setup
        # what no retry can fix (credentials, an api_base that does not answer or serve the model, a missing
        # index) stops the run here, before the cache is opened, a sandbox started or a request made
        preflight_model(s.model, key=s.model_key)
        preflight_tools(s.tools, key=s.tools_key)
        self._cache = RequestCache(self.folder.cache_path)
        provider = load_model(s.model, progress=self.progress)
        self.model = wrap_model(provider, s.client, self._cache, self.stats)
        self.tools = build_tools(s.tools)
        # host-side work of the episodes' sandboxes: tool calls, starts and restarts
        self._executor = ThreadPoolExecutor(max_workers=s.concurrency + 2, thread_name_prefix="episode")
        # fresh per-episode sandboxes: forked from a warm template (episode_isolation="process") or one new
        # sandbox each ("container"); see agentkd.sandbox. Each episode starts its own ahead: no warm spares
        self.pool = SandboxPool(s.sandbox, tools=self.tools, warm=0)

    async def run(self, spec: EpisodeSpec) -> Trajectory:
        from agentkd.agent.loop import run_episode

        sandbox = self.pool.acquire_ahead()  # boots while the first model call is in flight
        try:
            traj = await run_episode(spec.task, self.model, sandbox, self.tools, self.setup.agent,
                                     sampling=self._sampling, seed=spec.seed, sample_index=spec.sample,
                                     executor=self._executor)
        finally:
            self.pool.release(sandbox)  # closed a moment later, off the critical path
        traj.provenance.api_base = self.setup.model.api_base
        return traj

    def counters(self) -> dict[str, Any]:
        from agentkd.tools.cache import cache_stats

        s = self.stats
        tool = cache_stats(self.tools) or {}
        return {"retries": dict(s.retries), "request_cache": {"hits": s.cache_hits, "misses": s.cache_misses},
                "tool_cache": {k: tool[k] for k in ("hits", "misses") if k in tool},
                "spent_usd": s.spent_usd, "spent_before_usd": s.spent_before_usd}

    async def close(self, *, wait: bool = False) -> None:
        if self._cache is not None:
            self._cache.flush()
        # every sandbox is killed before this returns (no episode's code runs after it); waiting for their
        # processes to exit and removing their cgroups and folders goes on in a background thread (joined
        # at interpreter exit)
        if self.pool is not None:
            self.pool.close(wait=wait)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self.model is not None:
            await self.model.aclose()
