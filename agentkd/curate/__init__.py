"""Curation: scored run folders → an SFT/DPO dataset folder (HF DatasetDict + exports + card), and the
loss-mask check of such a dataset in a student's tokenizer (`masks`, `templates`).

    from agentkd.curate import CurateConfig, curate, student_messages
    result = curate(CurateConfig(runs=["runs/hotpot"]), "datasets/hotpot")
    result.card["splits"]                     # rows and tasks per split; card["sha256"] names the dataset

Modules: `render` (the student chat), `read` (streamed, validated run lines), `filters`, `dedupe`,
`export` (Arrow splits, ShareGPT / axolotl / TRL files), `card`, `pipeline` (the two passes), `templates`
(generation-tagged training chat templates), `masks` (check-masks). Importing this
package is light: datasets, pyarrow and transformers load inside the functions that use them.
"""

from agentkd.curate.config import CurateConfig
from agentkd.curate.pipeline import CurateResult, curate
from agentkd.curate.read import CurateError
from agentkd.curate.render import student_messages, student_prompt, tools_text_for

__all__ = ["CurateConfig", "CurateError", "CurateResult", "curate", "student_messages", "student_prompt",
           "tools_text_for"]
