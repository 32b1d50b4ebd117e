"""`agentkd view` without a browser: what the page embeds (scores, verdicts, SAG, failed episodes), that the
embedded JSON cannot end its <script> tag, that the page loads nothing from the network, and the CLI's exits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

from view_fixtures import HOSTILE, make_dataset, make_run

from agentkd.view import render_run
from agentkd.view.load import load_run
from agentkd.view.render import embed_json


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict, str]] = []
        self.urls: list[str] = []
        self._in: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "script":
            self._in = a
            self.scripts.append((a, ""))

    def handle_data(self, data):
        if self._in is not None:
            a, text = self.scripts[-1]
            self.scripts[-1] = (a, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None


def _by_key(data):
    return {t["key"]: t for t in data["trajectories"]}


def test_load_run_joins_scores_verdicts_and_failed_episodes(tmp_path):
    run = make_run(tmp_path)
    data = load_run(run, dataset=make_dataset(tmp_path, run))
    t = _by_key(data)
    assert len(t) == 6 and data["has_scores"] and data["has_decisions"]
    assert t["gsm8k/q0"]["correct"] == 1.0 and t["gsm8k/q0"]["score"]["metrics"] == {"equiv": 1.0}
    assert t["hotpotqa/q1"]["correct"] == 0.0 and t["gsm8k/q4"]["correct"] is None
    assert t["gsm8k/q4"]["score"]["reason"] == "no gold"
    assert [t[k]["verdict"] for k in ("gsm8k/q0", "hotpotqa/q1", "hotpotqa/q2", "aime/q3")] == \
        ["train", "rejected", "validation", "max_steps"]
    assert t["gsm8k/q4"]["verdict"] is None  # that decision line is another run's
    assert t["hotpotqa/q5"]["failed"] and t["hotpotqa/q5"]["reason"].startswith("APIConnectionError")
    assert not t["gsm8k/q0"]["failed"]
    step = t["gsm8k/q0"]["steps"][0]
    assert step["sag"]["vote"] == "split" and len(step["sag"]["candidates"]) == 3 and "extra" not in step
    assert t["gsm8k/q0"]["cost"] == 0.0015 and t["gsm8k/q0"]["tok_in"] == 220
    # one copy of the shared system prompt
    assert data["prompts"].count("You are a CodeAct agent.") == 1
    assert t["gsm8k/q0"]["sys"] == t["hotpotqa/q1"]["sys"]


def test_verdicts_by_run_folder_name_and_absent_decisions(tmp_path):
    run = make_run(tmp_path)
    ds = tmp_path / "ds"
    ds.mkdir()
    assert all(x["verdict"] is None for x in load_run(run, dataset=ds)["trajectories"])  # no decisions.jsonl
    (ds / "decisions.jsonl").write_text(json.dumps({"run": "runs/run", "key": ["aime/q3", 0],
                                                    "verdict": "length_cap"}) + "\n")
    assert _by_key(load_run(run, dataset=ds))["aime/q3"]["verdict"] == "length_cap"


def test_embedded_json_cannot_close_its_script_tag():
    value = {"s": HOSTILE + "<!-- </SCRIPT > & \u2028", "n": 1}
    text = embed_json(value)
    assert "<" not in text and ">" not in text and "\u2028" not in text
    assert json.loads(text) == value


def test_page_embeds_the_run_and_loads_nothing_from_the_network(tmp_path):
    run = make_run(tmp_path)
    # a metric that is not a number JSON knows must not break the page
    with (run / "scores.jsonl").open("a") as f:
        f.write('{"key": ["gsm8k/q4", 0], "correct": null, "metrics": {"f1": NaN}, "scorer": "x"}\n')
    with (run / "trajectories.jsonl").open("a") as f:  # a lone surrogate (possible in model output) is no crash
        f.write(json.dumps({"task": {"id": "sur", "question": "bad \ud800 char"}, "steps": []}) + "\n")
    path = render_run(run)
    assert path == run / "view.html"
    html = path.read_text()
    page = _Page()
    page.feed(html)
    data_tags = [text for a, text in page.scripts if a.get("type") == "application/json"]
    assert len(data_tags) == 1 and len(page.scripts) == 2  # the data and the page's own code, nothing injected
    data = json.loads(data_tags[0])
    assert _by_key(data)["hotpotqa/q2"]["steps"][0]["thought"] == "hostile thought " + HOSTILE
    assert _by_key(data)["gsm8k/q4"]["score"]["metrics"] == {"f1": "nan"}
    assert _by_key(data)["sur"]["question"] == "bad ? char"
    assert not [u for u in page.urls if not u.startswith(("data:", "#"))], page.urls
    assert not re.search(r"https?://", html.split('id="agentkd-data"')[0] + html.rsplit("</script>", 2)[1])
    assert "default-src 'none'" in html  # CSP: the page may not fetch anything


def test_long_fields_are_cut_visibly(tmp_path):
    run = make_run(tmp_path)
    line = json.loads((run / "trajectories.jsonl").read_text().splitlines()[0])
    line["steps"][0]["observation"] = "x" * 60_000
    line["task"]["id"] = "long"
    with (run / "trajectories.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    obs = _by_key(load_run(run))["gsm8k/long"]["steps"][0]["obs"]
    assert obs.startswith("x" * 50_000) and "10000 more characters not shown" in obs


def _cli(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "agentkd", "view", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_cli_writes_the_page_and_rejects_a_folder_without_trajectories(tmp_path):
    run = make_run(tmp_path)
    out = tmp_path / "pages" / "v.html"
    r = _cli(run, "--dataset", make_dataset(tmp_path, run), "--out", out)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and str(out) in r.stdout and not (run / "view.html").exists()
    assert "max_steps" in out.read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli(empty)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "trajectories.jsonl" in lines[0] and str(empty) in lines[0], r.stderr
    r = _cli(run, "--dataset", tmp_path / "nope")
    assert r.returncode == 2 and "nope" in r.stderr
