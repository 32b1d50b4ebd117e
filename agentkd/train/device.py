"""Where and in which precision a run trains: decided before any model is loaded.

`precision: auto` is bf16 on a GPU that supports it (fp16 on older GPUs) and fp32 on a CPU, so one recipe
runs on both. Asking for bf16/fp16 without a GPU is a recipe mistake (exit 2), not a slow surprise.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkd.core.config import ConfigError


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    precision: str  # "bf16", "fp16" or "fp32"

    @property
    def torch_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.precision]

    def trainer_kwargs(self) -> dict:
        return {"bf16": self.precision == "bf16", "fp16": self.precision == "fp16", "use_cpu": self.device == "cpu"}


def resolve_placement(device: str, precision: str, *, file: str | None = None) -> Placement:
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise ConfigError("device: cuda asked for, but no CUDA device is available", file=file, path="train.device")
    dev = "cuda" if (device == "cuda" or (device == "auto" and has_cuda)) else "cpu"
    if precision == "auto":
        if dev == "cpu":
            return Placement("cpu", "fp32")
        return Placement("cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16")
    if dev == "cpu" and precision in ("bf16", "fp16"):
        raise ConfigError(f"precision: {precision} needs a GPU and this run is on the CPU; use precision: auto "
                          "(fp32 on CPU, bf16 on GPU)", file=file, path="train.precision")
    if dev == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision: bf16 is not supported by this GPU; use auto or fp16", file=file,
                          path="train.precision")
    return Placement(dev, precision)
