"""The episode engine: what `collect` configures with a teacher and `evaluate` will configure with a student.

    folder = RunFolder("runs/hotpot-gpt4o")                         # config, trajectories, failures, cache, summary
    worker = LocalEpisodes(EpisodeSetup(model=..., client=..., agent=..., tools=..., sandbox=...), folder)
    summary = await EpisodeRunner(folder, worker, concurrency=16).run(folder.todo(tasks, samples=2, seed=0))

- `RunFolder` (`folder.py`): the run's files on disk, resume by `Trajectory.key`, torn-line repair.
- `EpisodeSpec` and the `EpisodeWorker` protocol (`worker.py`): an episode is an idempotent unit,
  (task, sample index, seed) under a fixed resolved config → one trajectory. Where it runs is the worker's
  business: `LocalEpisodes` (`local.py`) runs episodes on this process's event loop, each in its own sandbox
  from a `SandboxPool`; a worker on Ray actors across machines fits the same protocol.
- `EpisodeRunner` (`runner.py`): the driver. Bounded concurrency, the progress bar, the budget, stopping at
  once on an error no retry can fix, and the only writer of the run folder.
- `RunSummary` (`summary.py`): the typed result that the CLI prints and `summary.json` stores.
"""

from agentkd.engine.folder import RunFolder
from agentkd.engine.local import EpisodeSetup, LocalEpisodes
from agentkd.engine.runner import EpisodeRunner
from agentkd.engine.summary import RunSummary
from agentkd.engine.worker import EpisodeSpec, EpisodeWorker

__all__ = ["EpisodeRunner", "EpisodeSetup", "EpisodeSpec", "EpisodeWorker", "LocalEpisodes", "RunFolder", "RunSummary"]
