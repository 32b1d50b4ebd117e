"""`CurateConfig`: run folders → an SFT/DPO dataset on disk (recipe section `curate`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentkd.core.config import StrictConfig

EXPORT_FORMATS = ("sharegpt", "axolotl", "trl")


class CurateConfig(StrictConfig):
    """Which runs to read, how to render them for the student, what to filter and dedupe, what to write."""

    runs: list[str] = Field(default_factory=list, description="Run folders (from `agentkd collect`) to read, in order.")
    out: str | None = Field(default=None, description="Dataset folder to write (the CLI's --out wins).")
    overwrite: bool = Field(default=False, description="Replace an existing dataset folder (atomically).")

    # -- rendering -------------------------------------------------------------------------------------------
    prompt: str = Field(
        default="codeact_student",
        description="Student system/user prompt (a name in agentkd/agent/prompts or a YAML path); evaluation must "
        "use the same one. The teacher's few-shot prompt is never copied into the dataset.",
    )
    tools_text: str | None = Field(
        default=None,
        description="Tool listing for the prompt's {{ tools }} (None: rendered from each run's tools config, "
        "restricted to the tools its trajectories list in provenance.tools, as the episode loop renders them).",
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Step limit the student prompt states (None: the run's agent.max_steps)."
    )

    # -- scoring ---------------------------------------------------------------------------------------------
    score: bool = Field(
        default=True,
        description="Score trajectories that have no score yet (agentkd.score.run.score_run, no judge; writes the "
        "run's scores.jsonl sidecar, never trajectories.jsonl). False: unscored trajectories count as unscorable.",
    )
    scorer: str | None = Field(default=None, description="Scorer for that (None: score_run's default, by_domain).")
    on_bad_line: Literal["error", "skip"] = Field(
        default="error",
        description="A torn or foreign trajectories.jsonl line: error = read the rest, then stop with exit code 2 "
        "naming the first bad file:line (nothing written); skip = leave it out, warn and count it in the card.",
    )

    # -- filters (applied in this order; each reports how many it removed) -----------------------------------
    keep_recovered: bool = Field(
        default=True,
        description="Keep correct trajectories that hit a code execution error and recovered (False: drop any "
        "trajectory with an execution error).",
    )
    student: str | None = Field(
        default="embedded:smollm2-135m",
        description="Student model whose tokenizer measures lengths (embedded:NAME, local:PATH or a folder; "
        "resolved with agentkd.models.load.local_path_for). None: no length cap and no token statistics.",
    )
    max_tokens: int | None = Field(
        default=4096, ge=16,
        description="Drop trajectories whose rendered chat (the student's chat template) is longer than this many "
        "student tokens (None: no cap).",
    )
    batch_size: int = Field(default=512, ge=1, description="Trajectories tokenized per batch.")

    # -- dedupe ----------------------------------------------------------------------------------------------
    dedupe: bool = Field(
        default=True,
        description="Keep one of the trajectories of a task with the same normalised code-action sequence "
        "(comments, whitespace and formatting ignored; thoughts ignored).",
    )
    near_dup_threshold: float | None = Field(
        default=None, gt=0, le=1,
        description="Also drop trajectories whose code actions are near-duplicates of a kept one, across tasks: "
        "estimated Jaccard similarity of code-token 5-shingles (MinHash, 64 hashes, LSH) at least this "
        "(e.g. 0.9). None: off. Never looks at prompt text.",
    )

    # -- splits and pairs ------------------------------------------------------------------------------------
    validation_fraction: float = Field(
        default=0.1, ge=0, lt=1,
        description="Share of tasks (not trajectories) in the validation split; no task is in both splits.",
    )
    seed: int = Field(default=0, description="Seed of the task → split assignment (deterministic).")
    pairs_per_task: int = Field(
        default=1, ge=0,
        description="DPO pairs (correct, incorrect) per task at most, in DATASET/pairs (0: none).",
    )

    # -- outputs ---------------------------------------------------------------------------------------------
    exports: list[Literal["sharegpt", "axolotl", "trl"]] = Field(
        default_factory=lambda: list(EXPORT_FORMATS),
        description="Extra formats under DATASET/exports: sharegpt (LLaMA-Factory, with observation turns), "
        "axolotl (chat_template JSONL with per-turn train flags), trl (conversational JSONL).",
    )
    push_to_hub: str | None = Field(
        default=None, description="Also push the SFT DatasetDict to this Hugging Face Hub repo id (needs network)."
    )
    hub_private: bool = Field(default=True, description="Create the Hub repo as private.")
