"""`merge_adapter`: fold a LoRA adapter into its base model (PEFT `merge_and_unload`) and save an HF folder.

The base comes from `--base`, else the adapter's agentkd_provenance.json (the model spec it was trained
on), else `base_model_name_or_path` in adapter_config.json. The merged folder gets the base model's own
tokenizer (its inference chat template), so any HF-compatible server (vLLM, `agentkd serve`) loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from agentkd.core.config import ConfigError


def base_for(adapter: Path, base: str | None = None) -> Path:
    from agentkd.models.load import local_path_for
    from agentkd.train.provenance import read_provenance

    if not (adapter / "adapter_config.json").exists():
        raise ConfigError("not a PEFT adapter folder (no adapter_config.json)", file=adapter)
    spec = base or read_provenance(adapter).get("base_model")
    if not spec:
        spec = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    path = local_path_for(spec, progress=False) if spec else None
    if path is None or not path.exists():
        raise ConfigError(f"base model not found: {spec!r}; pass --base", file=adapter)
    return path


def merge_adapter(adapter: str | Path, out: str | Path, *, base: str | None = None) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, out = Path(adapter), Path(out)
    base_path = base_for(adapter, base)
    model = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base_path)).save_pretrained(str(out))
    prov = adapter / "agentkd_provenance.json"
    if prov.exists():
        data = json.loads(prov.read_text())
        data["merged_from"] = str(adapter.resolve())
        (out / "agentkd_provenance.json").write_text(json.dumps(data, indent=2))
    return out
