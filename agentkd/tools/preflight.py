"""Pre-flight check of the tools, made before a run's first episode: the retrieval index (or server) is there.

    preflight_tools(cfg.tools, key="collect.tools")

Raises `PreflightError` (exit code 4) with one line naming the recipe key and what to do.
"""

from __future__ import annotations

import urllib.error
from typing import Any

from agentkd.core.errors import PreflightError
from agentkd.core.httpcheck import error_reason, get_json


def preflight_tools(cfg: Any, *, key: str = "tools") -> None:
    """Check that the retrieval tool's index (or server) is there. `cfg` is a `ToolsConfig`. An
    `embedded:` corpus needs its package only (its index is built on first use); `hf:` datasets are
    checked when loaded."""
    from agentkd.core.config import ConfigError

    search = cfg.search
    if search is None:
        return
    if search.url:
        try:
            get_json(search.url.rstrip("/") + "/health")
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, OSError) as e:
            raise PreflightError(f"{key}.search.url: {search.url} does not answer ({error_reason(e)}): start "
                                 f"`agentkd index serve` there or fix {key}.search.url") from None
        return
    try:
        if search.index and search.index.startswith("embedded:"):
            from agentkd.tools.retrieval.corpus import EMBEDDED, package_file

            if search.index in EMBEDDED:  # an unknown name is reported when the corpus is read
                package_file(*EMBEDDED[search.index])
        else:
            from agentkd.tools.search import check_source

            check_source(search)
    except ConfigError as e:
        detail = str(e).removeprefix(f"{e.path}: ") if e.path else str(e)
        where = key + (e.path.removeprefix("tools") if e.path else ".search.index")  # as this recipe spells it
        raise PreflightError(f"{where}: {detail}") from None
