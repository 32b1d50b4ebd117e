"""`agentkd score RUN` as a user runs it (a real process) on a run folder with awkward lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from agentkd.core.types import Provenance, Step, Task, Trajectory
from agentkd.score.run import decode_line, score_run
from agentkd.score.store import read_scores

REPO = Path(__file__).resolve().parents[1]


def agentkd(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "agentkd", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def traj(tid, answer, pred, *, domain="factual", source="hotpotqa", status="ok", sample=0) -> str:
    t = Trajectory(task=Task(id=tid, question=f"question {tid}", answer=answer, domain=domain, source=source),
                   steps=[Step(index=0, model_output="Thought: x", code="final_answer(1)", final_answer="decoy",
                               is_final=True)],
                   final_answer=pred, status=status, status_reason="sandbox died" if status == "error" else None,
                   provenance=Provenance(sample_index=sample, extra={"note": 'a "final_answer": inside a string'}))
    return t.model_dump_json() + "\n"


def build_run(run: Path) -> Path:
    run.mkdir()
    lines = [
        traj("f1", ["Stanley Kubrick", "Kubrick"], "stanley kubrick."),
        traj("f1", ["Stanley Kubrick", "Kubrick"], "Steven Spielberg", sample=1),
        '{"event": "not a trajectory"}\n',                       # a foreign line
        traj("m1", "\\frac{1}{2}", "\\boxed{0.5}", domain="math", source="math500"),
        '{"schema_version": 1, "task": {"id": "x", "quest\n',    # a corrupt line in the middle
        traj("m2", "\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)", domain="math", source="math500"),
        traj("n1", None, "anything"),                             # no gold answer
        traj("e1", "Paris", None, status="error"),                # infrastructure failure
    ]
    torn = traj("f2", "Paris", "Paris")[:70]                      # a torn last line (killed writer)
    (run / "trajectories.jsonl").write_text("".join(lines) + torn)
    return run


def test_score_cli_writes_sidecar_leaves_trajectories_alone_and_resumes(tmp_path):
    run = build_run(tmp_path / "run")
    before = (run / "trajectories.jsonl").read_bytes()
    out = agentkd("score", str(run), "-q")
    assert out.returncode == 0, out.stderr
    path = run / "trajectories.jsonl"
    for lineno, what in ((3, "not a trajectory"), (5, "corrupt line"), (9, "torn last line")):
        assert f"{path}:{lineno}: {what}" in out.stderr, out.stderr
    assert (run / "trajectories.jsonl").read_bytes() == before
    scores = read_scores(run)
    assert set(scores) == {("hotpotqa/f1", 0), ("hotpotqa/f1", 1), ("math500/m1", 0), ("math500/m2", 0),
                           ("hotpotqa/n1", 0), ("hotpotqa/e1", 0)}
    assert scores[("hotpotqa/f1", 0)].correct == 1.0 and scores[("hotpotqa/f1", 0)].scorer == "qa_em_f1"
    assert scores[("hotpotqa/f1", 1)].correct == 0.0 and scores[("hotpotqa/f1", 1)].metrics["f1"] == 0.0
    assert (scores[("math500/m1", 0)].correct, scores[("math500/m1", 0)].scorer) == (1.0, "math_equiv")
    assert scores[("math500/m2", 0)].correct == 0.0
    assert scores[("hotpotqa/n1", 0)].correct is None and scores[("hotpotqa/n1", 0)].reason == "no gold answer"
    e1 = scores[("hotpotqa/e1", 0)]
    assert e1.correct is None and e1.reason == "infrastructure error: sandbox died"
    # one line per metric in the summary
    for row in ("correct", "em", "f1", "cover", "equiv", "unscorable: no gold answer"):
        assert row in out.stderr
    assert "6 scored now, 0 already scored" in out.stderr
    sidecar = (run / "scores.jsonl").read_bytes()
    out = agentkd("score", str(run), "-q")
    assert out.returncode == 0 and "0 scored now, 6 already scored" in out.stderr
    assert (run / "scores.jsonl").read_bytes() == sidecar and (run / "trajectories.jsonl").read_bytes() == before
    # a new trajectory appended by a resumed collection: only it is scored (a foreign line in the
    # sidecar is skipped too)
    with open(run / "scores.jsonl", "a") as f:
        f.write('{"key": "nonsense"}\n')
    with open(run / "trajectories.jsonl", "a") as f:
        f.write("\n" + traj("f3", "Paris", "Paris, France"))
    s = score_run(run, progress=False)
    assert (s.scored_new, s.already_scored) == (1, 6) and read_scores(run)[("hotpotqa/f3", 0)].metrics["cover"] == 1.0


def test_unknown_schema_version_is_a_one_line_error_exit_2(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    newer = json.loads(traj("f1", "Paris", "Paris"))
    newer["schema_version"] = 99
    (run / "trajectories.jsonl").write_text(traj("f0", "Paris", "Paris") + json.dumps(newer) + "\n")
    out = agentkd("score", str(run))
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "trajectories.jsonl: line 2: schema_version" in err[0] and "99" in err[0]


def test_cli_errors(tmp_path):
    out = agentkd("score", str(tmp_path))
    assert out.returncode == 2 and "no trajectories.jsonl" in out.stderr
    run = build_run(tmp_path / "run")
    out = agentkd("score", str(run), "--scorer", "bleu")
    assert out.returncode == 2 and "--scorer: scorer: unknown scorer 'bleu'" in out.stderr


def test_fast_line_decoding_agrees_with_json(tmp_path):
    """The fast path reads only a line's head and tail; it must give what json.loads gives, and fall back
    when the layout is not agentkd's (keys reordered, final_answer keys nested after the real one)."""
    lines = [traj("a", "x", {"nested": {"final_answer": 3}}).encode(), traj("b", "x", 'say ,"final_answer": 1').encode()]
    tricky = json.loads(lines[0])
    tricky["provenance"]["extra"] = {"k": [1, {"x": 0, "final_answer": 2}], "a": 1, "final_answer": "decoy"}
    lines.append(json.dumps(tricky, separators=(",", ":")).encode())
    lines.append(json.dumps(dict(reversed(list(tricky.items())))).encode())  # another writer's key order
    for raw in lines:
        full = json.loads(raw)
        fast = decode_line(raw)
        assert {k: full[k] for k in fast} == fast and fast["final_answer"] == full["final_answer"]


def test_factual_scoring_speed(tmp_path):
    """A floor far under the benchmark's 2,000/s target (this box is shared), to catch a slow hot path."""
    run = tmp_path / "run"
    run.mkdir()
    line = traj("0", ["Stanley Kubrick", "Kubrick"], "Kubrick")
    with open(run / "trajectories.jsonl", "w") as f:
        for i in range(3000):
            f.write(line.replace('"id":"0"', f'"id":"{i}"', 1))
    t0 = time.perf_counter()
    s = score_run(run, progress=False)
    rate = s.scored_new / (time.perf_counter() - t0)
    assert s.scored_new == 3000 and rate > 1000, rate
