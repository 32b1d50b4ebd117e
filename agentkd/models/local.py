"""Local transformers models: an HF folder or a GGUF file, optionally with a LoRA adapter.

Concurrent requests are batched: they queue for one generation worker thread, which decodes whatever is
waiting as one batch (agentkd/models/batching.py: per-row sampling settings, seeds, stop strings and
max_tokens; a request's n samples are rows of the batch, the prefix the rows share prefilled and kept once
for all of them; each completion carries its tokens' log-probs under the model). Stop sequences stop each sequence
independently and are cut from the text. Prefill uses the chat template's `continue_final_message`, so the
reply continues the given assistant text. The event loop only queues the request and awaits the answer.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from agentkd.core.config import ConfigError
from agentkd.models.base import ChatModel, Completion, Message
from agentkd.models.batching import BatchWorker, Request
from agentkd.models.config import LocalBatchConfig

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512


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


class TransformersModel(ChatModel):
    provider = "local"
    supports_prefill = True

    def __init__(self, path: str | Path, *, name: str | None = None, adapter: str | Path | None = None,
                 device: str = "auto", dtype: str = "auto", batch: LocalBatchConfig | None = None):
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
        self.batch = batch or LocalBatchConfig()
        self.worker = BatchWorker(self.model, self.tokenizer, device=self.device,
                                  max_sequences=self.batch.max_sequences, max_tokens=self.batch.max_tokens,
                                  window_s=self.batch.window_ms / 1000, min_shared=self.batch.share_prefix,
                                  threads=self.batch.threads, attention=self.batch.attention)

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

    async def _generate(self, messages, *, n, temperature, top_p, max_tokens, stop, seed, prefill):
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Completion]] = loop.create_future()

        def settle(comps: list[Completion] | None, error: BaseException | None) -> None:
            if fut.done():  # the caller gave up (cancelled, timed out)
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(comps)  # type: ignore[arg-type]

        def deliver(comps: list[Completion] | None, error: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(settle, comps, error)
            except RuntimeError:  # the caller's event loop is closed
                pass

        def encode() -> list[int]:
            return self.encode_prompt(messages, prefill)["input_ids"][0].tolist()

        self.worker.submit(Request(encode=encode, n=n, temperature=temperature, top_p=top_p,
                                   max_tokens=max_tokens or DEFAULT_MAX_TOKENS, stop=stop, seed=seed,
                                   deliver=deliver, abandoned=fut.cancelled))
        return await fut
