"""Task loading: the paper's JSON, JSONL, HF datasets (offline error), the 11 paper suites and the 2 quickstart
suites shipped in the package, and users' own suites in ./evals or $AGENTKD_EVALS."""

from __future__ import annotations

import json

import pytest

from agentkd.core.config import ConfigError
from agentkd.core.suites import list_suites, load_suite
from agentkd.core.tasks import TaskSource, load_tasks

EXPECTED = {
    "hotpotqa": 500, "bamboogle": 125, "musique": 500, "2wikimultihopqa": 500,
    "math500": 500, "gsm-hard": 500, "aime": 90, "olymmath": 200,
    "hotpotqa-train": 1000, "math-train": 1000, "math-medium-train": 1000,
}


QUICKSTART = {"quickstart-train": 28, "quickstart-test": 14}


def test_suite_files_are_complete():
    suites = list_suites()
    assert set(suites) == set(EXPECTED) | set(QUICKSTART)
    for name in EXPECTED:
        s = load_suite(name)
        assert s.count == EXPECTED[name]
        assert s.domain == ("math" if any(w in name for w in ("math", "gsm", "aime", "olym")) else "factual")
        assert s.scorer == ("math_equiv" if s.domain == "math" else "qa_em_f1")
        assert s.hub is not None and s.local


def test_quickstart_suites_ship_in_the_package(tmp_path, monkeypatch):
    """Found from any directory (no ./evals, no data roots), mixed domains read per task, no overlap."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTKD_DATA", raising=False)
    monkeypatch.delenv("AGENTKD_EVALS", raising=False)
    loaded = {}
    for name, n in QUICKSTART.items():
        s = load_suite(name)
        assert s.count == n and s.split == name.split("-")[1] and s.local is None and s.hub is None
        tasks = load_tasks(TaskSource(suite=name))
        assert len(tasks) == n and len({t.id for t in tasks}) == n
        assert {t.domain for t in tasks} == {"factual", "math"} and all(t.source == name for t in tasks)
        assert all(isinstance(t.answer, str) and t.answer for t in tasks)
        loaded[name] = tasks
    # the held-out split shares no task (nor question) with the train split
    train, test = loaded["quickstart-train"], loaded["quickstart-test"]
    assert not {t.id for t in train} & {t.id for t in test}
    assert not {t.question for t in train} & {t.question for t in test}
    # a limit still mixes both kinds: factual and math tasks are interleaved in file order
    assert {t.domain for t in load_tasks(TaskSource(suite="quickstart-train", limit=3))} == {"factual", "math"}


def test_users_suites_in_evals_shadow_shipped_ones(tmp_path, monkeypatch):
    """./evals (the documented place for your own suites) and $AGENTKD_EVALS come before the shipped suites;
    a `file:` is read relative to the suite's YAML, a `local:` pattern under the data roots."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "mine.jsonl").write_text('{"id": "a", "question": "2+2?", "answer": "4"}\n')
    (tmp_path / "evals" / "mine.yaml").write_text(
        "name: mine\ndomain: math\nsplit: test\nscorer: math_equiv\nfile: mine.jsonl\n")
    (tmp_path / "evals" / "aime.yaml").write_text(
        "name: aime\ndomain: math\nsplit: test\nscorer: math_equiv\nlocal: my/aime-*.json\n")
    (tmp_path / "data" / "benchmarks" / "my").mkdir(parents=True)
    (tmp_path / "data" / "benchmarks" / "my" / "aime-1.json").write_text('[{"id": 1, "question": "1+1?", "answer": 2}]')
    [t] = load_tasks(TaskSource(suite="mine"))
    assert (t.id, t.answer, t.domain, t.source) == ("a", "4", "math", "mine")
    [t] = load_tasks(TaskSource(suite="aime"))
    assert (t.question, t.answer) == ("1+1?", 2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "aime.yaml").write_text("name: aime\ndomain: math\nsplit: test\nscorer: x\nfile: gone.jsonl\n")
    monkeypatch.setenv("AGENTKD_EVALS", str(other))
    assert list_suites()["aime"] == other / "aime.yaml"
    with pytest.raises(ConfigError, match=r"no file 'gone\.jsonl' and no hub source"):
        load_tasks(TaskSource(suite="aime"))
    assert "quickstart-train" in list_suites()  # the shipped suites stay visible


def test_mixed_domain_field_is_checked(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"question": "q", "kind": "poetry"}\n')
    with pytest.raises(ConfigError, match="kind 'poetry' is not one of factual, math, other"):
        load_tasks(TaskSource(path=str(tmp_path / "t.jsonl"), fields={"domain": "kind"}))


def test_benchmark_counts_from_shared(shared_bench, monkeypatch):
    monkeypatch.setenv("AGENTKD_DATA", str(shared_bench))
    for name, n in EXPECTED.items():
        tasks = load_tasks(TaskSource(suite=name))
        assert len(tasks) == n, name
        assert len({t.id for t in tasks}) == n, f"{name}: ids must be unique"
        assert all(t.question and t.source == name for t in tasks)
        # the published math-medium train file has 2 records with a null answer; test sets have none
        missing = sum(t.answer is None for t in tasks)
        assert missing == (2 if name == "math-medium-train" else 0), name
    gsm = load_tasks(TaskSource(suite="gsm-hard", limit=1))[0]
    assert gsm.domain == "math" and isinstance(gsm.answer, float)
    hp = load_tasks(TaskSource(suite="hotpotqa", offset=2, limit=3))
    assert len(hp) == 3 and hp[0].metadata["level"] == "hard"


def test_paper_json_and_jsonl_with_field_mapping(tmp_path):
    (tmp_path / "qa.json").write_text(json.dumps({"metadata": {}, "examples": [
        {"id": 5, "question": "Q?", "answer": "A", "level": "hard"}]}))
    [t] = load_tasks(TaskSource(path=str(tmp_path / "qa.json")))
    assert (t.id, t.question, t.answer, t.domain, t.source, t.metadata) == ("5", "Q?", "A", "factual", "qa",
                                                                             {"level": "hard"})
    (tmp_path / "gsm.jsonl").write_text('{"input": "1+1?", "target": 2}\n{"input": "2+2?", "target": 4}\n')
    tasks = load_tasks(TaskSource(path=str(tmp_path / "gsm.jsonl"),
                                  fields={"id": None, "question": "input", "answer": "target"}))
    assert [(t.id, t.question, t.answer, t.domain) for t in tasks] == [("0", "1+1?", 2, "math"), ("1", "2+2?", 4, "math")]


def test_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no file matches"):
        load_tasks(TaskSource(path=str(tmp_path / "missing-*.json")))
    (tmp_path / "x.jsonl").write_text('{"q": "hi"}\n')
    with pytest.raises(ConfigError, match="has no 'question' field"):
        load_tasks(TaskSource(path=str(tmp_path / "x.jsonl")))
    with pytest.raises(ConfigError, match="unknown suite"):
        load_tasks(TaskSource(suite="nope"))
    with pytest.raises(ValueError, match="exactly one of"):
        TaskSource(path="a.json", suite="hotpotqa")


def test_hf_dataset_offline_fails_clearly():
    with pytest.raises(ConfigError) as e:
        load_tasks(TaskSource(hf="agentkd-test/definitely-not-cached", split="test"))
    msg = str(e.value)
    assert "could not load HF dataset 'agentkd-test/definitely-not-cached'" in msg and "HF_HUB_OFFLINE=1" in msg


def test_hf_dataset_loads_with_mapping(tmp_path):
    """The real load_dataset path, on a dataset saved locally (the hub is unreachable here)."""
    import datasets

    d = tmp_path / "ds"
    datasets.Dataset.from_list([{"problem": "2+3?", "solution": "5", "uid": "a"}]).to_json(str(d / "test.jsonl"))
    tasks = load_tasks(TaskSource(hf=str(d), split="test", fields={"id": "uid", "question": "problem",
                                                                    "answer": "solution"}, domain="math"))
    assert [(t.id, t.question, t.answer, t.domain) for t in tasks] == [("a", "2+3?", "5", "math")]
