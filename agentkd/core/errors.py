"""agentkd's error hierarchy and the CLI's exit codes.

Every error a user can act on is an `AgentkdError`: its message is one line (the file and key, or the
provider and model, at fault, and what to do), and `exit_code` is what `agentkd` exits with. Anything
else is a bug and keeps its traceback.

| code | meaning |
|---|---|
| 0 | done |
| 1 | an unexpected error (a bug: traceback printed) |
| 2 | `ConfigError`: a recipe, config, task file or path is wrong |
| 3 | the run's budget is spent (`collect.client.budget_usd`); raise it and rerun to continue |
| 4 | `FatalModelError` / `PreflightError`: no retry can fix it (credentials, unknown model, bad request, an `api_base` that does not answer, a missing index) |
| 5 | the run finished but some episodes ended in infrastructure failures (kept in failed.jsonl; rerun to retry them) |
| 130 | interrupted (Ctrl-C) |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1
EXIT_CONFIG = 2
EXIT_BUDGET = 3
EXIT_FATAL = 4
EXIT_EPISODES_FAILED = 5
EXIT_INTERRUPTED = 130


class AgentkdError(Exception):
    """A failure the user can act on: a one-line message and the CLI's exit code."""

    exit_code: int = EXIT_BUG


class PreflightError(AgentkdError):
    """A check made before the first episode failed (credentials, api_base, model, retrieval index)."""

    exit_code = EXIT_FATAL
