"""`agentkd run RECIPE`: the whole loop (collect → score → curate → train → evaluate) in one run folder.

Each stage runs only if its section is in the recipe, in order, and is skipped when a stamp says its
outputs are complete for the same resolved config and the same inputs (`agentkd.pipeline.stamps`).
"""

from agentkd.pipeline.config import RunConfig
from agentkd.pipeline.stages import PipelineResult, run_recipe

__all__ = ["PipelineResult", "RunConfig", "run_recipe"]
