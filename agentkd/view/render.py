"""`render_run`: one self-contained HTML file to browse a run (no network assets: CSS and JS are inline).

The run's records (`agentkd.view.load.load_run`) are embedded as JSON in a `<script type="application/json">`
tag and drawn by the page's own JavaScript, which only ever sets text (never HTML) from the data, so model
output such as `<script>` shows as text. The JSON is escaped so no `</script>` (or `<!--`) can end the tag.
"""

from __future__ import annotations

import json
import os
import time
from importlib import resources
from pathlib import Path

from agentkd.view.load import finite, load_run

_PLACEHOLDER = "__AGENTKD_VIEW_DATA__"


def embed_json(data: object) -> str:
    """JSON safe inside a `<script>` element: `<`, `>`, `&` and the JS line separators as \\u escapes (they
    only occur inside JSON strings, where the escape means the same character)."""
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN / Infinity somewhere (a metric): JSON.parse rejects them, so they become strings
        text = json.dumps(finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def render_run(run_dir: str | os.PathLike, *, dataset: str | os.PathLike | None = None,
               out: str | os.PathLike | None = None) -> Path:
    """Write the viewer page for `run_dir` (default `RUN_DIR/view.html`) and return its path.

    `dataset`: a curated DATASET folder; its `decisions.jsonl` tells which filter kept or dropped each
    trajectory. Raises `ConfigError` (exit 2) when `run_dir` has no trajectories.jsonl."""
    data = load_run(run_dir, dataset=dataset)
    data["generated"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    template = resources.files("agentkd.view").joinpath("page.html").read_text(encoding="utf-8")
    head, sep, tail = template.partition(_PLACEHOLDER)
    assert sep, "page.html lost its data placeholder"
    path = Path(out) if out is not None else Path(run_dir) / "view.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # lone surrogates (possible in model output read back from JSON) cannot be UTF-8: replaced, not fatal
    with open(tmp, "w", encoding="utf-8", errors="replace") as f:
        f.write(head)
        f.write(embed_json(data))
        f.write(tail)
    os.replace(tmp, path)
    return path
