"""Supervised fine-tuning on the curated `messages`: TRL `SFTTrainer` + PEFT LoRA, `assistant_only_loss`.

Loss falls on the assistant turns only (the training chat template's `{% generation %}` spans, the same
rendering the curation mask check verifies). Throughput options never change what is learned:

- length-grouped batching (`group_by_length`) puts examples of similar length in one batch: the same
  examples, fewer pad tokens (the data order differs, the per-token loss does not); grouped over the whole
  epoch, seeded (agentkd/train/grouping.py);
- the LM head runs only at the loss-carrying positions where TRL's fused head would score them all (CPU,
  MPS): the same loss, metrics and gradients (agentkd/train/lmhead.py);
- padding-free batches (`padding_free`) concatenate a batch into one row with `position_ids` restarting
  at each example and no attention mask. transformers (>= 5) turns those positions into a block-diagonal
  mask for sdpa/eager/flash attention, *but only when no KV cache is built*: with `use_cache=True` the
  packed examples attend to each other (measured: the loss changes). So padding-free sets `use_cache=False`
  and is used only with an attention implementation in `PACKED_ATTENTION`. TRL's collator masks the first
  label of every example, which is a system-prompt token that carries no loss anyway, so the trained tokens
  are exactly those of the padded batch. Packing (`packing=True`) is not used: it changes which examples
  share a batch and, with BFD, truncates differently.

TRL 1.16 builds the `labels` from `assistant_masks` while preparing the dataset, so masks survive its
collators (padded or padding-free); tests/test_train_sft.py checks the trained tokens one by one.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from agentkd.train.config import TrainConfig
from agentkd.train.device import Placement

PACKED_ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def load_base_model(path: Path, placement: Placement, *, attn: str = "sdpa") -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=placement.torch_dtype, attn_implementation=attn)


def attention_for(cfg: TrainConfig, placement: Placement) -> str:
    """flash_attention_2 on a GPU that has the `flash_attn` package (varlen kernels: padding-free pays off),
    else sdpa."""
    import importlib.util

    if placement.device == "cuda" and placement.precision in ("bf16", "fp16") and \
            importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def lora_config(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM", bias="none")


def use_padding_free(cfg: TrainConfig, model: Any) -> bool:
    """`on`: wherever the attention keeps examples apart. `auto`: only with varlen flash kernels, which skip the
    cross-example blocks; sdpa/eager compute the whole (sum of lengths)² score matrix of the concatenated row and
    mask it, which costs more than the padded batch's B·max², so there length grouping does the saving."""
    impl = getattr(model.config, "_attn_implementation", None)
    if cfg.padding_free == "off" or cfg.batch_size == 1:
        return False
    if cfg.padding_free == "auto":
        return impl in VARLEN_ATTENTION
    ok = impl in PACKED_ATTENTION
    if cfg.padding_free == "on" and not ok:
        from agentkd.core.config import ConfigError

        raise ConfigError(f"padding_free: on needs an attention implementation that keeps examples apart "
                          f"({', '.join(PACKED_ATTENTION)}); this model uses {impl}", path="train.padding_free")
    return ok


def common_args(cfg: TrainConfig, placement: Placement, out: Path, *, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments shared by the SFT and DPO stages."""
    every = {"eval": cfg.eval_steps, "save": cfg.save_steps}
    return {
        "output_dir": str(out / "checkpoints"),
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps,
        "learning_rate": cfg.lr,
        "lr_scheduler_type": cfg.lr_scheduler,
        "warmup_steps": cfg.warmup_ratio,  # a float < 1 is a ratio of the total steps
        "weight_decay": cfg.weight_decay,
        "per_device_train_batch_size": cfg.batch_size,
        "per_device_eval_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "logging_steps": cfg.logging_steps,
        "eval_strategy": ("steps" if every["eval"] else "epoch") if has_eval else "no",
        "eval_steps": every["eval"],
        "save_strategy": "steps" if every["save"] else "epoch",
        "save_steps": every["save"],
        "save_total_limit": cfg.save_total_limit,
        "report_to": [] if cfg.report_to == "none" else [cfg.report_to],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **placement.trainer_kwargs(),
    }


def sft_splits(dataset_dir: Path) -> tuple[Any, Any | None]:
    from datasets import load_from_disk

    dd = load_from_disk(str(dataset_dir))
    train = dd["train"].select_columns(["messages"])
    val = dd["validation"].select_columns(["messages"]) if "validation" in dd and len(dd["validation"]) else None
    return train, val


def build_sft_trainer(cfg: TrainConfig, model_path: Path, tokenizer: Any, placement: Placement, out: Path,
                      callbacks: list[Any]) -> Any:
    """An `SFTTrainer` ready to `.train()`: LoRA (or full) on the assistant tokens of DATASET/train."""
    from trl import SFTConfig
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    train_ds, val_ds = sft_splits(Path(cfg.dataset))
    model = load_base_model(model_path, placement, attn=attention_for(cfg, placement))
    padding_free = use_padding_free(cfg, model)
    if padding_free:
        model.config.use_cache = False  # a KV cache turns off transformers' packed-sequence masking
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = SFTConfig(
        **common_args(cfg, placement, out, has_eval=val_ds is not None),
        max_length=cfg.max_length,
        assistant_only_loss=True,
        packing=False,
        padding_free=False,  # TRL's flag refuses max_length without packing; the collator below does it
        train_sampling_strategy="random",  # group_by_length: AgentSFTTrainer's sampler, over the whole epoch
        dataset_num_proc=None,
    )
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True) \
        if padding_free else None
    trainer = trainer_class()(
        model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds, processing_class=tokenizer,
        peft_config=lora_config(cfg) if cfg.finetune == "lora" else None, data_collator=collator,
        callbacks=callbacks,
    )
    trainer.agentkd_padding_free = padding_free
    trainer.agentkd_group_by_length = cfg.group_by_length
    from peft import PeftModel

    from agentkd.train.lmhead import add_kept_positions_head

    base = trainer.model.get_base_model() if isinstance(trainer.model, PeftModel) else trainer.model
    trainer.agentkd_kept_positions_head = add_kept_positions_head(base)
    quiet_printer(trainer, callbacks)
    return trainer


@functools.cache
def trainer_class() -> Any:
    """TRL's SFTTrainer with the whole-epoch length-grouped sampler (when `agentkd_group_by_length`)."""
    from trl import SFTTrainer

    class AgentSFTTrainer(SFTTrainer):
        agentkd_group_by_length = False

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            from agentkd.train.grouping import EpochLengthGroupedSampler, train_lengths

            dataset = self.train_dataset if train_dataset is None else train_dataset
            if not self.agentkd_group_by_length or dataset is None or not hasattr(dataset, "__len__"):
                return super()._get_train_sampler(train_dataset)
            return EpochLengthGroupedSampler(train_lengths(dataset), self.args.train_batch_size,
                                             self.args.data_seed if self.args.data_seed is not None
                                             else self.args.seed)

    return AgentSFTTrainer


def quiet_printer(trainer: Any, callbacks: list[Any]) -> None:
    """With our progress bar on, drop transformers' log printer (it prints every log dict to stdout)."""
    from transformers.trainer_callback import PrinterCallback

    from agentkd.train.callbacks import is_progress

    if any(is_progress(c) for c in callbacks):
        trainer.remove_callback(PrinterCallback)
