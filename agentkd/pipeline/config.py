"""`RunConfig`: how `agentkd run` lays out its run folder and serves a local teacher (recipe section `run`)."""

from __future__ import annotations

from pydantic import Field

from agentkd.core.config import StrictConfig


class RunDirs(StrictConfig):
    """Where each stage writes, relative to the run folder (absolute paths are used as given)."""

    collect: str = Field(default="collect", description="The collection run folder (curate reads it).")
    dataset: str = Field(default="dataset", description="The curated dataset folder (train reads it).")
    model: str = Field(default="model", description="The trained adapter / model folder (evaluation loads it).")
    eval_base: str = Field(default="eval-base", description="Evaluation of the base student.")
    eval_trained: str = Field(default="eval-trained", description="Evaluation of the trained student.")
    eval: str = Field(default="eval", description="Evaluation folder when the recipe trains nothing.")


class RunConfig(StrictConfig):
    """The pipeline's own settings; every stage's settings stay in its section."""

    out: str | None = Field(default=None, description="Run folder (the CLI's --out wins; default runs/<recipe name>).")
    dirs: RunDirs = Field(default_factory=RunDirs, description="Each stage's output folder inside the run folder.")
    serve_teacher: bool | None = Field(
        default=None,
        description="Serve a local/embedded collect teacher with `agentkd serve` (a subprocess on a free 127.0.0.1 "
        "port) and collect through its OpenAI-compatible API, as an API teacher is used. None: yes for local teachers.")
    serve_timeout_s: float = Field(default=600.0, gt=0, description="How long the teacher server may take to start.")
    eval_base: bool = Field(default=True, description="With a train section: also evaluate the base student "
                            "(the comparison row of the summary).")
    view: bool = Field(default=True, description="Write the viewer pages (collect with the dataset's verdicts, "
                       "each evaluation) at the end.")
