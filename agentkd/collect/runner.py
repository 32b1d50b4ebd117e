"""Collection: the episode engine (`agentkd.engine`) configured with a teacher.

    summary = collect(CollectConfig(...), "runs/hotpot-gpt4o")

Writes the run folder (`agentkd.engine.folder`): `config.yaml`, `trajectories.jsonl`, `failed.jsonl`,
`cache.sqlite`, `summary.json`. Rerunning the same command resumes: finished (task, sample) pairs are
skipped and interrupted episodes replay their cached calls for free. A `budget_usd` stop ends the run
cleanly (`summary.stopped == "budget"`, exit code 3 from the CLI); raise the budget and rerun to continue.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentkd.collect.config import CollectConfig
from agentkd.core.tasks import load_tasks
from agentkd.engine import EpisodeRunner, EpisodeSetup, LocalEpisodes, RunFolder, RunSummary


async def collect_async(cfg: CollectConfig, out_dir: str | Path, *, progress: bool = True) -> RunSummary:
    folder = RunFolder(out_dir)
    folder.write_config({"collect": cfg.model_dump(mode="json")})
    tasks = load_tasks(cfg.tasks)
    todo = folder.todo(tasks, samples=cfg.samples, seed=cfg.seed)
    setup = EpisodeSetup(model=cfg.teacher, agent=cfg.agent, client=cfg.client, tools=cfg.tools,
                         sandbox=cfg.sandbox, concurrency=cfg.concurrency, model_key="collect.teacher",
                         tools_key="collect.tools")
    runner = EpisodeRunner(folder, LocalEpisodes(setup, folder, progress=progress), concurrency=cfg.concurrency,
                           budget_usd=cfg.client.budget_usd, progress=progress, label="collect")
    return await runner.run(todo, tasks=len(tasks), samples=cfg.samples)


def collect(cfg: CollectConfig, out_dir: str | Path, *, progress: bool = True) -> RunSummary:
    """Run (or resume) a collection; returns the summary that is also written to summary.json."""
    return asyncio.run(collect_async(cfg, out_dir, progress=progress))
