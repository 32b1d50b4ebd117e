"""`agentkd score`: add scores to a run folder (RUN/scores.jsonl), optionally with an LLM judge."""

from __future__ import annotations

from pathlib import Path

import typer


def score(
    run: Path = typer.Argument(..., help="Run folder holding trajectories.jsonl."),
    judge: str = typer.Option(None, "--judge", help="Also ask this chat model to judge factual answers "
                              "(e.g. openai/gpt-4o-mini; cached in RUN/judge_cache.sqlite)."),
    judge_api_base: str = typer.Option(None, "--judge-api-base", help="OpenAI-compatible server for the judge."),
    scorer: str = typer.Option(None, "--scorer", help="One scorer for every trajectory (qa_em_f1, math_equiv, "
                               "by_domain); default: the one each task's suite names."),
    config: Path = typer.Option(None, "--config", help="Recipe YAML with a `score:` section (judge model, "
                                "client, prompt); --judge/--scorer override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score a run's trajectories without touching trajectories.jsonl; rerun to score only what is new.

    Exit codes: 0 done; 2 a config mistake or a trajectory schema this agentkd does not read;
    3 the judge's budget ran out (rerun with a larger one to continue); 4 the judge model cannot be used.
    """
    from agentkd.core.config import ConfigError, load_recipe
    from agentkd.core.errors import EXIT_BUDGET
    from agentkd.models.config import ModelConfig
    from agentkd.score.config import JudgeConfig, ScoreConfig
    from agentkd.score.run import score_run

    cfg = ScoreConfig()
    if config is not None:
        configs = load_recipe(config)
        if "score" not in configs:
            raise ConfigError("recipe has no `score:` section", file=config)
        cfg = configs["score"]
    judge_cfg = cfg.judge
    if judge:
        base = judge_cfg or JudgeConfig()
        judge_cfg = base.model_copy(update={"model": ModelConfig(model=judge, api_base=judge_api_base)})
    summary = score_run(run, scorer=scorer or cfg.scorer, judge=judge_cfg, progress=not quiet)
    _print_summary(summary)
    if summary.stopped == "budget":
        typer.echo("stopped: the judge's budget ran out; raise it (score.judge.client.budget_usd) and rerun",
                   err=True)
        raise typer.Exit(EXIT_BUDGET)


def _print_summary(s) -> None:
    from rich.console import Console
    from rich.table import Table

    for line in s.bad_lines[:20]:  # plain lines (no wrapping): file:line stays greppable
        typer.echo(f"warning: {line}", err=True)
    if s.skipped_lines > 20:
        typer.echo(f"warning: ... {s.skipped_lines - 20} more lines skipped", err=True)
    console = Console(stderr=True)
    t = Table(title=f"score → {Path(s.run) / 'scores.jsonl'}", title_justify="left")
    t.add_column("metric")
    t.add_column("n", justify="right")
    t.add_column("mean", justify="right")
    for name, m in s.metrics.items():
        t.add_row(name, str(int(m["n"])), f"{m['mean']:.4f}")
    for reason, n in sorted(s.unscorable.items()):
        t.add_row(f"unscorable: {reason}", str(n), "-")
    console.print(t)
    judge = f"; judged {s.judged_new} with {s.judge['model']} (prompt {s.judge['prompt_hash']})" if s.judge else ""
    console.print(f"{s.trajectories} trajectories: {s.scored_new} scored now, {s.already_scored} already scored"
                  f"{judge}; {s.wall_s:.2f} s", highlight=False)
