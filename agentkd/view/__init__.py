"""The run viewer: `render_run(run_dir, dataset=None, out=None)` writes one static HTML page to browse a
run's trajectories (task, answers, score, steps, SAG votes, curation verdicts, provenance and cost)."""

from agentkd.view.render import render_run

__all__ = ["render_run"]
