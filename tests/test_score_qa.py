"""Factual scorers: HotpotQA/SQuAD normalisation, EM, F1 (yes/no rule), cover match, aliases, the registry."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentkd.core.config import ConfigError
from agentkd.core.types import Task, Trajectory
from agentkd.score.base import get_scorer, score_trajectory, suite_scorer, vote_key
from agentkd.score.qa import cover_match, exact_match, f1, normalize_answer


@pytest.mark.parametrize("raw, norm", [
    ("The Eiffel Tower", "eiffel tower"),
    ("  an   apple, a pear! ", "apple pear"),
    ("Theatre of the Absurd", "theatre of absurd"),  # 'the' inside a word stays
    ("U.S.A.", "usa"),
    ("Rock-'n'-Roll", "rocknroll"),  # punctuation is dropped, not turned into spaces (official scripts)
    ("A", ""),
    ("\tTHE\nEnd\n", "end"),
])
def test_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match_and_aliases():
    assert exact_match("the eiffel tower.", "Eiffel Tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("NYC", ["New York City", "NYC", "New York"]) == 1.0
    assert exact_match("Boston", ["New York City", "NYC"]) == 0.0
    assert exact_match(1990, 1990.0) == 1.0  # a float gold that is an integer is not read as "19900"
    assert exact_match("1990", "1990") == 1.0
    assert exact_match("anything", None) == 0.0 and exact_match("anything", []) == 0.0


def test_f1_tokens_and_yes_no_rule():
    assert f1("Stanley Kubrick", "Stanley Kubrick") == 1.0
    assert f1("director Stanley Kubrick", "Stanley Kubrick") == pytest.approx(0.8)
    assert f1("Kubrick", "Stanley Kubrick") == pytest.approx(2 / 3)
    assert f1("Spielberg", "Stanley Kubrick") == 0.0
    # yes/no/noanswer: 0 unless both sides are the same one, even with token overlap
    assert f1("yes", "no") == 0.0
    assert f1("no", "no way") == 0.0
    assert f1("yes it is", "yes") == 0.0
    assert f1("Yes.", "yes") == 1.0
    assert f1("noanswer", "noanswer") == 1.0
    assert f1("Kubrick", ["Spielberg", "Stanley Kubrick"]) == pytest.approx(2 / 3)  # max over aliases


def test_cover_match():
    assert cover_match("It was directed by Stanley Kubrick in 1968.", "Stanley Kubrick") == 1.0
    assert cover_match("Kubrick", "Stanley Kubrick") == 0.0
    assert cover_match("in 1990", "1990") == 1.0
    assert cover_match("in 1990", "199") == 0.0  # whole tokens only
    assert cover_match("Paris, France", ["Lyon", "paris"]) == 1.0
    assert cover_match("", "x") == 0.0


def test_scorer_results_and_unscorable():
    qa = get_scorer("qa_em_f1")
    r = qa.score("the Eiffel tower", Task(id="1", question="q", answer="Eiffel Tower"))
    assert (r.correct, r.metrics, r.scorer) == (1.0, {"em": 1.0, "f1": 1.0, "cover": 1.0}, "qa_em_f1")
    r = qa.score("Paris", Task(id="2", question="q", answer=None))
    assert r.correct is None and r.reason == "no gold answer"
    r = qa.score("", Task(id="3", question="q", answer="  "))
    assert r.correct is None
    t = Trajectory(task=Task(id="4", question="q", answer="x"), final_answer="x", status="error",
                   status_reason="sandbox died")
    r = score_trajectory(t)
    assert r.correct is None and "infrastructure" in r.reason and "sandbox died" in r.reason
    t = Trajectory(task=Task(id="5", question="q", answer="x"), final_answer=None, status="max_steps")
    assert score_trajectory(t).correct == 0.0  # no answer given is wrong, not unscorable


def test_unknown_scorer_names_suite_file_and_key(tmp_path):
    bad = tmp_path / "mysuite.yaml"
    bad.write_text("name: mysuite\ndomain: factual\nsplit: test\nscorer: bleu\nfile: t.jsonl\n")
    with pytest.raises(ConfigError) as e:
        suite_scorer(str(bad))
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and "scorer" in msg and "'bleu'" in msg
    assert suite_scorer("hotpotqa").name == "qa_em_f1"
    assert suite_scorer("math500").name == "math_equiv"
    assert suite_scorer("quickstart-test").name == "by_domain"
    assert suite_scorer("no-such-suite") is None


def test_vote_key_groups_equal_answers():
    assert vote_key("The Eiffel Tower.", "factual") == vote_key("eiffel tower", "factual")
    assert vote_key("Paris", "factual") != vote_key("Lyon", "factual")


def test_factual_scoring_never_imports_math_verify():
    code = ("import sys; from agentkd.score.base import get_scorer; from agentkd.core.types import Task; "
            "get_scorer('by_domain').score('a', Task(id='1', question='q', answer='a')); "
            "print(sorted(m for m in ('math_verify', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
