"""An LLM judge for factual answers: any chat model, through agentkd's own client stack.

    judge = open_judge(JudgeConfig(model=ModelConfig(model="openai/gpt-4o-mini")), run_dir)
    verdict = await judge.judge(question, gold, prediction)   # {"model", "prompt_hash", "verdict", "explanation"}

The prompt is a YAML data file (`agentkd/score/prompts/judge.yaml`: accept aliases and equivalent forms,
reject hedged or list-of-guesses answers); the judge replies with a JSON object {"explanation", "correct"}.
Replies are read leniently (code fences, prose around the object, `correct: yes`); one that still cannot
be read is sent back once more with a reminder of the format (a different request, so the request cache
does not replay the bad reply), and after `attempts` tries the answer is left unjudged: `verdict` None
with the error recorded, never scored as wrong. Requests go through cache ∘ budget ∘ retry ∘ rate limit
(`agentkd.models.wrappers.wrap_model`) with the cache in RUN/judge_cache.sqlite, so a rerun costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError, load_yaml
from agentkd.models.base import ChatModel, FatalModelError, ModelError
from agentkd.models.budget import BudgetExceeded
from agentkd.score.base import ScoreResult
from agentkd.score.config import JudgeConfig
from agentkd.score.qa import as_text, golds

JUDGE_CACHE = "judge_cache.sqlite"
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_FIELD = re.compile(r"[\"']?correct[\"']?\s*[:=]\s*[\"']?(1|0|true|false|yes|no|correct|incorrect)\b", re.I)
_EXPLANATION = re.compile(r"[\"']?explanation[\"']?\s*[:=]\s*\"((?:[^\"\\]|\\.)*)\"", re.I | re.S)
_TRUE = {"1", "true", "yes", "correct"}
_FALSE = {"0", "false", "no", "incorrect"}


@dataclass(frozen=True)
class JudgePrompt:
    system: str
    user: str
    retry: str
    hash: str  # sha256 of the prompt file's text, first 16 hex digits: stored with every judged score


def load_prompt(path: str | Path | None = None) -> JudgePrompt:
    if path is None:
        ref = resources.files("agentkd.score").joinpath("prompts").joinpath("judge.yaml")
        with resources.as_file(ref) as p:
            return load_prompt(p)
    data = load_yaml(path)
    for key in ("system", "user", "retry"):
        if not isinstance(data.get(key), str):
            raise ConfigError("judge prompt needs a text value", file=path, path=key)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return JudgePrompt(data["system"], data["user"], data["retry"], digest)


def _verdict(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    text = str(value).strip().lower()
    return 1 if text in _TRUE else 0 if text in _FALSE else None


def parse_verdict(text: str) -> tuple[int | None, str | None]:
    """(0 or 1, explanation) from a judge reply; (None, None) when no verdict can be read from it."""
    candidates = [*_FENCE.findall(text), *_OBJECT.findall(text)]
    for chunk in reversed(candidates):  # the last object is the answer when the judge thought aloud first
        try:
            obj = json.loads(chunk.strip())
        except ValueError:
            continue
        if isinstance(obj, dict) and "correct" in obj:
            verdict = _verdict(obj["correct"])
            if verdict is not None:
                expl = obj.get("explanation")
                return verdict, str(expl).strip() if expl is not None else None
    fields = _FIELD.findall(text)
    if fields:
        m = _EXPLANATION.search(text)
        return _verdict(fields[-1]), m.group(1).strip() if m else None
    return None, None


class LLMJudge:
    """Asks `model` whether a prediction matches the gold answer; see the module docstring."""

    def __init__(self, model: ChatModel, prompt: JudgePrompt | None = None, *, attempts: int = 3,
                 max_tokens: int = 256, max_concurrency: int = 32):
        self.model = model
        self.max_concurrency = max_concurrency  # answers judged at once (keeps a budget's overshoot this small)
        self.prompt = prompt or load_prompt()
        self.attempts = attempts
        self.max_tokens = max_tokens

    @property
    def name(self) -> str:
        return self.model.name

    def messages(self, question: str, gold: Any, prediction: Any) -> list[dict[str, str]]:
        user = (self.prompt.user.replace("{question}", question)
                .replace("{gold}", " | ".join(golds(gold)) or "(none)")
                .replace("{prediction}", as_text(prediction) or "(no answer)"))
        return [{"role": "system", "content": self.prompt.system}, {"role": "user", "content": user}]

    async def judge(self, question: str, gold: Any, prediction: Any) -> dict[str, Any]:
        """{"model", "prompt_hash", "verdict": 0 | 1 | None, "explanation"} (+ "error" and "raw" when the
        judge gave no readable verdict, or its calls kept failing)."""
        out: dict[str, Any] = {"model": self.name, "prompt_hash": self.prompt.hash, "verdict": None,
                               "explanation": None}
        messages = self.messages(question, gold, prediction)
        text = ""
        for _ in range(self.attempts):
            try:
                comps = await self.model.generate(messages, temperature=0.0, max_tokens=self.max_tokens)
            except (FatalModelError, BudgetExceeded):
                raise  # no retry can fix it / the budget is spent: the run stops (what is judged is kept)
            except ModelError as e:  # retries used up (429s, 5xx, malformed bodies): unjudged, not wrong
                return {**out, "error": f"judge call failed: {e}"}
            text = comps[0].text if comps else ""
            verdict, explanation = parse_verdict(text)
            if verdict is not None:
                return {**out, "verdict": verdict, "explanation": explanation}
            messages = [*messages, {"role": "assistant", "content": text},
                        {"role": "user", "content": self.prompt.retry.replace("{reply}", text[:200])}]
        return {**out, "error": f"no verdict in {self.attempts} replies", "raw": text[:500]}


def open_judge(cfg: JudgeConfig | str, run_dir: str | Path, stats: Any = None) -> LLMJudge:
    """A judge whose requests are cached in RUN/judge_cache.sqlite, budgeted, retried and rate-limited."""
    from agentkd.models.config import ModelConfig
    from agentkd.models.load import load_model
    from agentkd.models.wrappers import RequestCache, wrap_model

    if isinstance(cfg, str):
        cfg = JudgeConfig(model=ModelConfig(model=cfg))
    provider = load_model(cfg.model, progress=False)
    cache = RequestCache(Path(run_dir) / JUDGE_CACHE)
    model = wrap_model(provider, cfg.client, cache, stats)
    prompt = load_prompt(cfg.prompt) if cfg.prompt else load_prompt()
    return LLMJudge(model, prompt, attempts=cfg.attempts, max_tokens=cfg.max_tokens,
                    max_concurrency=cfg.client.max_concurrency)


def judged(base: ScoreResult, verdict: dict[str, Any]) -> ScoreResult:
    """`base` (a qa_em_f1 result) with the judge's verdict: `correct` becomes the verdict; without one it
    stays exact match and `reason` says why."""
    metrics = dict(base.metrics)
    if verdict.get("verdict") is None:
        metrics.pop("judge", None)
        reason = f"judge gave no verdict ({verdict.get('error')}); correct is exact match"
        return base.model_copy(update={"metrics": metrics, "judge": verdict, "reason": reason})
    metrics["judge"] = float(verdict["verdict"])
    return base.model_copy(update={"correct": float(verdict["verdict"]), "metrics": metrics, "judge": verdict,
                                   "reason": None})


def needs_judge(record: dict[str, Any] | None, judge: LLMJudge) -> bool:
    """Whether a stored score line lacks this judge's verdict (same model and prompt)."""
    j = (record or {}).get("judge") or {}
    return not (j.get("verdict") is not None and j.get("model") == judge.name
                and j.get("prompt_hash") == judge.prompt.hash)
