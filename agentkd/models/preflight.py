"""Pre-flight checks made before a run's first episode, for mistakes no retry can fix.

    preflight_model(cfg.teacher, key="collect.teacher")  # credentials, api_base answering and serving the model

(`agentkd.tools.preflight.preflight_tools` checks the retrieval index or server the same way.)

Each raises `PreflightError` (exit code 4) with one line naming the model or key and what to do. They are
quick (a few seconds at most: one GET with a short timeout) and import nothing heavy: litellm, whose import
takes seconds, only for a provider whose key variables are not in `_KEY_VARS`.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from pathlib import Path

from agentkd.core.errors import PreflightError
from agentkd.core.httpcheck import error_reason, get_json
from agentkd.models.config import ModelConfig

log = logging.getLogger(__name__)
_OPENAI_ROUTES = ("openai/", "hosted_vllm/")  # litellm prefixes that talk to an OpenAI-compatible api_base

# The API key variables of common litellm providers (any one suffices), so that checking them needs no
# litellm import; tests/test_failfast.py checks that litellm.validate_environment names the same ones.
_KEY_VARS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "groq": ("GROQ_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "deepseek": ("DEEPSEEK_API_KEY",),
    "together_ai": ("TOGETHERAI_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "cohere": ("COHERE_API_KEY",),
    "xai": ("XAI_API_KEY",),
    "fireworks_ai": ("FIREWORKS_AI_API_KEY",),
    "deepinfra": ("DEEPINFRA_API_KEY",),
}


def credential_vars(model: str) -> tuple[str, ...]:
    """The environment variables that can hold `model`'s API key (litellm model string, no api_base).

    Providers outside `_KEY_VARS` ask litellm, which only names the variables that are missing; of those
    only `*API_KEY` ones count, because the others (AWS_*, VERTEXAI_PROJECT, ...) have defaults litellm
    finds elsewhere (instance roles, gcloud)."""
    provider = model.split("/", 1)[0] if "/" in model else None
    if provider in _KEY_VARS:
        return _KEY_VARS[provider]
    import litellm

    return tuple(v for v in litellm.validate_environment(model).get("missing_keys", []) if v.endswith("API_KEY"))


def missing_credentials(model: str, api_key_env: str | None = None) -> tuple[str, ...]:
    """The variables to set (any one of them) when `model`'s key is not in the environment; () when it is."""
    if api_key_env:
        return () if os.environ.get(api_key_env) else (api_key_env,)
    names = credential_vars(model)
    return () if not names or any(os.environ.get(v) for v in names) else names


def served_name(model: str) -> str:
    """The model name an OpenAI-compatible server knows `model` by (`openai/NAME` → NAME)."""
    return model.split("/", 1)[1] if "/" in model else model


def _check_api_base(cfg: ModelConfig, key: str) -> None:
    base = cfg.api_base.rstrip("/")  # type: ignore[union-attr]
    who = f"{cfg.model} at {cfg.api_base}"
    api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if cfg.api_key_env and not api_key:
        raise PreflightError(f"{who}: {cfg.api_key_env} is not set: set it ({key}.api_key_env names it)")
    try:
        listing = get_json(base + "/models", key=api_key or "EMPTY")
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            hint = (f"check {cfg.api_key_env}" if cfg.api_key_env else
                    f"the server wants an API key: name the variable that holds it in {key}.api_key_env")
            raise PreflightError(f"{who}: GET /models was refused ({e.code}): {hint}") from None
        if e.code == 404 and cfg.model.startswith(_OPENAI_ROUTES):
            raise PreflightError(f"{who}: GET {base}/models is not found (404): an OpenAI-compatible api_base "
                                 f"usually ends in /v1; fix {key}.api_base") from None
        log.warning("%s: GET %s/models answered %s; not checking which models it serves", who, base, e.code)
        return
    except (urllib.error.URLError, OSError) as e:  # refused, unreachable, timed out, reset
        raise PreflightError(f"{who}: the server does not answer ({error_reason(e)}): start the server or fix "
                             f"{key}.api_base") from None
    if not cfg.model.startswith(_OPENAI_ROUTES):
        return  # another provider's proxy: its model list need not use the names litellm sends
    try:
        served = [str(m["id"]) for m in listing["data"]]
    except (TypeError, KeyError, IndexError):
        return  # answers, but not with an OpenAI model list: nothing more to check
    name = served_name(cfg.model)
    if served and name not in served:
        prefix = cfg.model.split("/", 1)[0] + "/" if "/" in cfg.model else ""
        shown = ", ".join(served[:5]) + (f" (+{len(served) - 5} more)" if len(served) > 5 else "")
        raise PreflightError(f"{who}: the server does not serve {name!r} (it serves {shown}): set {key}.model, "
                             f"e.g. to {prefix}{served[0]}")


def preflight_model(cfg: ModelConfig, *, key: str = "model") -> None:
    """Check that `cfg`'s model can be called at all, before the first episode. `key` is its recipe path,
    named in messages (e.g. collect.teacher)."""
    spec = cfg.model
    if cfg.api_base:
        _check_api_base(cfg, key)
        return
    if spec.startswith("embedded:"):
        from agentkd.core.config import ConfigError
        from agentkd.models.embedded import embedded_source

        try:
            embedded_source(spec.split(":", 1)[1])
        except ConfigError as e:
            raise PreflightError(f"{key}.model: {e}") from None
        return
    if spec.startswith("local:") or ("/" in spec and Path(spec).expanduser().exists()):
        path = Path(spec.removeprefix("local:")).expanduser()
        if not path.exists():
            raise PreflightError(f"{key}.model: {path} not found (an HF model folder or a .gguf file)")
        return
    missing = missing_credentials(spec, cfg.api_key_env)
    if missing:
        where = f"{key}.api_key_env names it" if cfg.api_key_env else f"or name another variable in {key}.api_key_env"
        raise PreflightError(f"{spec} (litellm): no API key: set {' or '.join(missing)} ({where})")
