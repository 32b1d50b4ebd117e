"""Local transformers models: an HF folder or a GGUF file, optionally with a LoRA adapter.

n > 1 samples are drawn in one batched `generate` call that shares one pass over the prompt: the prompt's
KV cache is computed once and copied n times (transformers' `num_return_sequences` would run the prompt n
times: SAG's 8 candidates would cost 8 prefills). Each completion carries its tokens' log-probabilities
under the model (`Completion.logprobs`, before temperature/top-p), which SAG's tie-break uses. Stop sequences stop
each sequence independently (transformers `stop_strings`) and are cut from the text. Prefill uses the
chat template's `continue_final_message`, so the reply continues the given assistant text.
Generation runs in a worker thread under a lock, so the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError
from agentkd.models.base import ChatModel, Completion, Message, Usage, truncate_at_stop

log = logging.getLogger(__name__)


def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class _StopOnText:
    """Stop each sequence once its *generated* text contains a stop string (transformers' own
    `stop_strings` also matches text that spans into the prompt, which OpenAI servers never do)."""

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int):
        self.tokenizer, self.stop, self.prompt_len = tokenizer, stop, prompt_len
        # a stop string of L characters spans at most L tokens (+1 for a partial byte-level token)
        self.window = max(len(s) for s in stop) + 2

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        new = input_ids[:, self.prompt_len:]
        tails = new[:, -self.window:].tolist()
        done = [any(s in self.tokenizer.decode(t, skip_special_tokens=True) for s in self.stop) for t in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _TokenLogprobs:
    """A logits processor that records, step by step, the log-probability of the token each row chose:
    at step t it sees the token chosen at t-1 (the last input id) and keeps step t's distribution."""

    def __init__(self) -> None:
        self.prev: Any = None
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.prev is not None:
            self.steps.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def per_row(self, sequences: Any) -> list[list[float]]:
        import torch

        steps = list(self.steps)
        if self.prev is not None:
            steps.append(self.prev.gather(1, sequences[:, -1:]).squeeze(1))
        return torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(sequences.shape[0])]


def _cache_kw() -> str:
    """The name generate/forward take a KV cache by (`cache` from transformers 5.x on, `past_key_values` before)."""
    try:
        from transformers.generation.utils import ALL_CACHE_NAMES

        return ALL_CACHE_NAMES[0]
    except ImportError:
        return "past_key_values"


class TransformersModel(ChatModel):
    provider = "local"
    supports_prefill = True

    def __init__(self, path: str | Path, *, name: str | None = None, adapter: str | Path | None = None,
                 device: str = "auto", dtype: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(path)
        if not path.exists():
            raise ConfigError("model path does not exist", file=path, path="model")
        self.path = path
        self.name = name or str(path)
        self.adapter = str(adapter) if adapter else None
        self.device = _pick_device(device)
        kw: dict[str, Any] = {}
        folder = path
        if path.is_file():
            if path.suffix != ".gguf":
                raise ConfigError("a model file must be a .gguf; otherwise give an HF folder", file=path, path="model")
            folder, kw["gguf_file"] = path.parent, path.name
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=_pick_dtype(dtype, self.device), **kw)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
        self.model = model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "provider": self.provider, "path": str(self.path), "adapter": self.adapter}

    def encode_prompt(self, messages: list[Message], prefill: str | None) -> Any:
        msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        if prefill:
            msgs.append({"role": "assistant", "content": prefill})
        return self.tokenizer.apply_chat_template(
            msgs, add_generation_prompt=not prefill, continue_final_message=bool(prefill),
            tokenize=True, return_dict=True, return_tensors="pt",
        )

    def _shared_prefill(self, enc: Any, n: int) -> dict[str, Any]:
        """generate() inputs for n samples of one prompt whose KV cache was computed once: the prompt (but
        its last token, which generate runs to get the first distribution) goes through the model once and
        the cache is repeated n times."""
        import torch
        from transformers import DynamicCache

        ids, mask = enc["input_ids"], enc["attention_mask"]
        cache = DynamicCache(config=self.model.config)
        kw = _cache_kw()
        with torch.inference_mode():
            self.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True, **{kw: cache})
        cache.batch_repeat_interleave(n)
        return {"input_ids": ids.repeat(n, 1), "attention_mask": mask.repeat(n, 1), kw: cache}

    async def _generate(self, messages, *, n, temperature, top_p, max_tokens, stop, seed, prefill):
        return await asyncio.to_thread(self._generate_sync, messages, n, temperature, top_p, max_tokens, stop,
                                       seed, prefill)

    def _generate_sync(self, messages: list[Message], n: int, temperature: float | None, top_p: float | None,
                       max_tokens: int | None, stop: list[str] | None, seed: int | None,
                       prefill: str | None) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        with self._lock:
            enc = self.encode_prompt(messages, prefill).to(self.device)
            prompt_len = enc["input_ids"].shape[1]
            do_sample = bool(temperature) and temperature > 0  # type: ignore[operator]
            gen: dict[str, Any] = {
                "max_new_tokens": max_tokens or 512,
                "do_sample": do_sample,
                "pad_token_id": self.tokenizer.pad_token_id,
                # greedy decoding gives n identical answers: decode once and copy
                "num_return_sequences": n if do_sample else 1,
            }
            if do_sample:
                gen["temperature"] = temperature
                gen["top_p"] = top_p if top_p is not None else 1.0
                gen["top_k"] = 0
            else:
                gen.update(temperature=None, top_p=None, top_k=None)
            if stop:
                gen["stopping_criteria"] = StoppingCriteriaList([_StopOnText(self.tokenizer, stop, prompt_len)])
            if seed is not None:
                torch.manual_seed(seed)
            lps = _TokenLogprobs()
            gen["logits_processor"] = LogitsProcessorList([lps])
            inputs = dict(enc)
            if gen["num_return_sequences"] > 1 and prompt_len > 1:
                inputs = self._shared_prefill(enc, gen["num_return_sequences"])
                gen["num_return_sequences"] = 1
            with torch.inference_mode():
                out = self.model.generate(**inputs, **gen)
        new = out[:, prompt_len:]
        token_lps = lps.per_row(out)
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        completions = []
        for row, row_lps in zip(new.tolist(), token_lps, strict=True):
            length = next((i for i, t in enumerate(row) if t in eos), None)
            ended_eos = length is not None
            ids = row if length is None else row[:length]
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            text, stopped = truncate_at_stop(text, stop)
            finish = "stop" if (stopped or ended_eos or len(ids) < gen["max_new_tokens"]) else "length"
            usage = Usage(prompt_tokens=prompt_len, completion_tokens=len(ids) if not ended_eos else len(ids) + 1)
            completions.append(Completion(text=text, finish_reason=finish, usage=usage,
                                          logprobs=[round(x, 5) for x in row_lps[:len(ids)]] or None))
        if not do_sample and n > 1:
            completions = [completions[0].model_copy() for _ in range(n)]
        return completions
