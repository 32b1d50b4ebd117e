"""`TrainConfig`: fine-tune a student on a curated dataset (recipe section `train`).

One config for every setup: `precision: auto` is fp32 on a CPU and bf16 on a GPU that supports it, so the
same recipe trains on a laptop and on a GPU node (`accelerate launch -m agentkd train RECIPE` goes past one
GPU; see recipes/accelerate/). `method: sft` trains LoRA (or the full model) with TRL's `SFTTrainer` and
`assistant_only_loss`; `method: dpo` continues an SFT adapter on the dataset's (correct, incorrect) pairs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentkd.core.config import StrictConfig


class LoraConfig(StrictConfig):
    """PEFT LoRA settings (ignored with `finetune: full`)."""

    r: int = Field(default=16, ge=1, description="LoRA rank.")
    alpha: int = Field(default=32, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: str | list[str] = Field(
        default="all-linear", description="Modules to adapt: 'all-linear' or a list of module names (q_proj, ...)."
    )


class DpoConfig(StrictConfig):
    """The preference stage (`method: dpo`): TRL `DPOTrainer` on DATASET/pairs."""

    beta: float = Field(default=0.1, gt=0.0, description="DPO temperature: how far the policy may move from the SFT reference.")
    loss_type: str = Field(default="sigmoid", description="TRL DPO loss type (sigmoid = the original DPO loss).")
    max_length: int | None = Field(default=None, ge=16, description="Prompt + completion tokens kept (default: train.max_length).")


class TrainConfig(StrictConfig):
    """A curated dataset + a student model → a PEFT adapter (or a full model) with its provenance."""

    model: str = Field(default="embedded:smollm2-135m",
                       description="Student base model: embedded:NAME, local:PATH or an HF folder.")
    dataset: str = Field(description="Curated DATASET folder (agentkd curate output: train/validation splits, pairs/).")
    out: str | None = Field(default=None, description="Output folder (default: models/<recipe name>).")
    method: Literal["sft", "dpo"] = Field(
        default="sft", description="sft: supervised on the assistant turns; dpo: preference stage on DATASET/pairs, "
        "starting from `adapter` (an SFT adapter).")
    adapter: str | None = Field(default=None, description="SFT adapter folder a `dpo` run starts from (required for dpo).")
    finetune: Literal["lora", "full"] = Field(default="lora", description="LoRA adapter or full fine-tuning.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA rank, alpha, dropout, target modules.")
    dpo: DpoConfig = Field(default_factory=DpoConfig, description="Preference-stage settings.")
    template: str | None = Field(default=None, description="Training chat template (.jinja with generation markers); "
                                 "default: the student family's training template.")
    epochs: float = Field(default=2.0, gt=0, description="Passes over the training split.")
    max_steps: int = Field(default=-1, description="Stop after this many optimizer steps (-1: run all epochs).")
    lr: float = Field(default=2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: str = Field(default="cosine", description="transformers scheduler name (cosine, linear, constant...).")
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(default=2, ge=1, description="Examples per device per forward pass.")
    grad_accum: int = Field(default=4, ge=1, description="Gradient accumulation steps (effective batch = "
                            "batch_size × grad_accum × devices).")
    max_length: int = Field(default=10240, ge=16, description="Tokens per example kept (longer ones are truncated).")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="auto: bf16 on a GPU that has it, else fp16 on GPU, fp32 on CPU.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto uses CUDA when present.")
    gradient_checkpointing: bool = Field(default=False, description="Trade compute for memory on long trajectories.")
    seed: int = Field(default=42, description="Seed for initialisation and data order.")
    group_by_length: bool = Field(default=True, description="Batch examples of similar length (less padding; "
                                  "same examples, same loss per token).")
    padding_free: Literal["auto", "on", "off"] = Field(
        default="auto", description="Concatenate a batch without pad tokens (position_ids keep sequences apart). "
        "auto: on with flash-attention varlen kernels (GPU with flash_attn); on: also with sdpa/eager, "
        "where it is exact but computes the whole concatenated row's attention.")
    eval_steps: int | None = Field(default=None, ge=1, description="Eval loss on the validation split every N steps "
                                   "(default: once per epoch).")
    save_steps: int | None = Field(default=None, ge=1, description="Checkpoint every N steps (default: once per epoch).")
    save_total_limit: int | None = Field(default=2, ge=1, description="Checkpoints kept in OUT/checkpoints.")
    logging_steps: int = Field(default=1, ge=1, description="Log loss every N optimizer steps.")
    report_to: Literal["none", "tensorboard", "wandb"] = Field(default="none", description="Metrics logger.")
    check_masks: bool = Field(default=True, description="Run the curation mask check before training (refuse a "
                              "dataset that trains nothing or trains observations).")
    progress: bool = Field(default=True, description="Rich progress bar with loss and ETA.")
