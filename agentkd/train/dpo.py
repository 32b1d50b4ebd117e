"""The preference stage (`method: dpo`): TRL `DPOTrainer` on DATASET/pairs, starting from an SFT adapter.

The SFT adapter is loaded trainable and TRL copies it into a frozen "ref" adapter, so the reference policy is
the SFT student (not the bare base model) and the output is still one standard PEFT adapter on the base
model (servable with `agentkd serve --adapter`, mergeable with `agentkd train merge`).

What TRL 1.16 trains on: for conversational pairs it renders prompt, prompt+chosen and prompt+rejected with
the chat template and takes *every* token after the shared prompt as completion (`chosen_mask` is all
ones). With multi-turn agent trajectories the chosen/rejected sides hold the tool observations
(user "Observation:" turns) too, so their log-probabilities enter the DPO margin. The reference model
sees the same observations, so their contribution is the policy-vs-reference drift on them, not a
signal the policy can act on; it adds noise, not a wrong target. agentkd keeps TRL's behaviour rather than
patching its collator; curate pairs whose rejected side fails early (short observations) where it matters.

When it helps: after SFT has converged, with a few hundred or more pairs of the same task where the
incorrect trajectory is a plausible near-miss (wrong tool use, a wrong final answer after reasonable
steps). With a handful of pairs or a large beta it overfits or barely moves. Off unless a recipe asks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentkd.train.config import TrainConfig
from agentkd.train.device import Placement
from agentkd.train.sft import common_args, load_base_model, quiet_printer


def pair_splits(dataset_dir: Path) -> tuple[Any, Any | None]:
    from datasets import load_from_disk

    dd = load_from_disk(str(dataset_dir / "pairs"))
    cols = ["prompt", "chosen", "rejected"]
    train = dd["train"].select_columns(cols)
    val = dd["validation"].select_columns(cols) if "validation" in dd and len(dd["validation"]) else None
    return train, val


def build_dpo_trainer(cfg: TrainConfig, model_path: Path, tokenizer: Any, placement: Placement, out: Path,
                      callbacks: list[Any]) -> Any:
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    train_ds, val_ds = pair_splits(Path(cfg.dataset))
    base = load_base_model(model_path, placement)
    model = PeftModel.from_pretrained(base, str(cfg.adapter), is_trainable=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = DPOConfig(
        **common_args(cfg, placement, out, has_eval=val_ds is not None),
        beta=cfg.dpo.beta,
        loss_type=[cfg.dpo.loss_type],
        max_length=cfg.dpo.max_length or cfg.max_length,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
                         processing_class=tokenizer, callbacks=callbacks)
    quiet_printer(trainer, callbacks)
    return trainer


def sequence_logps(model: Any, tokenizer: Any, prompt: list[dict], completion: list[dict]) -> float:
    """Sum of log-probabilities of the tokens after the prompt (as TRL's DPO scores a completion: the prompt is
    rendered with the generation prompt, and the completion is what follows the common prefix)."""
    import torch

    p_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
    f_ids = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    n = next((i for i, (a, b) in enumerate(zip(p_ids["input_ids"], f_ids, strict=False)) if a != b),
             min(len(p_ids["input_ids"]), len(f_ids)))
    ids = torch.tensor([f_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
    return float(lp[n - 1:].sum())
