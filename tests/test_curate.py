"""Curation: student rendering, filters (counts, order), agent-aware dedupe, task-level splits, exports in
each format, DPO pairs, the card, bad input and atomic writes. Real tokenizer (the tiny Qwen2 fixture's BPE),
real datasets/pyarrow files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentkd.core.types import Provenance, Step, Task, Trajectory
from agentkd.curate import CurateConfig, CurateError, curate, student_messages
from agentkd.curate.filters import FILTERS

TEACHER_SYSTEM = "TEACHER FEW-SHOT PROMPT: Example 1 ... Example 2 ..."


def make_traj(tid: str, sample: int = 0, *, answer="Paris", final="Paris", codes=None, thought="I search.",
              status="ok", domain="factual", source="synth", errors=None, observation="Paris is in France.",
              prefix=None, cost=0.01, tools=("web_search", "final_answer"), parse_error_step=False) -> Trajectory:
    """A trajectory: one step per code in `codes` (with observations), then a final_answer step."""
    codes = codes if codes is not None else [f"r = web_search('capital {tid}')\nprint(r)"]
    errors = errors or {}
    steps = []
    for i, code in enumerate(codes):
        out = f"Thought: {thought}\nCode:\n```py\n{code}\n```<end_code>"
        if i == 0 and prefix:
            out = f"Thought: {prefix} {thought}\nCode:\n```py\n{code}\n```<end_code>"
        steps.append(Step(index=i, model_output=out, thought=thought, code=code, observation=observation,
                          error=errors.get(i), prefix=prefix if i == 0 else None, cost_usd=cost))
    if parse_error_step:
        steps.append(Step(index=len(steps), model_output="I forgot the code block", error="no code block",
                          observation="Your reply had no code block...", cost_usd=cost))
    fin = f"final_answer({final!r})"
    steps.append(Step(index=len(steps), model_output=f"Thought: done.\nCode:\n```py\n{fin}\n```<end_code>",
                      code=fin, is_final=True, final_answer=final, cost_usd=cost))
    return Trajectory(task=Task(id=tid, question=f"What is the capital of {tid}?", answer=answer, domain=domain,
                                source=source),
                      system_prompt=TEACHER_SYSTEM, user_prompt=f"Task: {tid} (teacher instructions)", steps=steps,
                      final_answer=final, status=status,
                      provenance=Provenance(model="openai/teacher", sample_index=sample, tools=list(tools),
                                            prefix_mode="prefill" if prefix else "none", prefix_text=prefix))


def write_run(folder: Path, trajs: list[Trajectory], *, max_steps: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "trajectories.jsonl", "w") as f:
        for t in trajs:
            f.write(t.model_dump_json() + "\n")
    (folder / "config.yaml").write_text(f"collect:\n  agent:\n    max_steps: {max_steps}\n  tools:\n    search:\n"
                                        "      k: 2\n")
    (folder / "summary.json").write_text('{"out": "x"}\n')
    return folder


def run_curate(tmp_path: Path, trajs, *, name="ds", student=None, **kw):
    run = write_run(tmp_path / f"run-{name}", trajs)
    cfg = CurateConfig(runs=[str(run)], student=student, **kw)
    return curate(cfg, tmp_path / name)


# -- rendering -------------------------------------------------------------------------------------------
def test_student_rendering_short_prompt_prefix_observations_and_nothing_after_the_answer():
    from agentkd.agent.prompts import load_prompt

    t = make_traj("France", codes=["r = web_search('France')\nprint(r)", "print(len(r))"], prefix="Paris, I recall.")
    t.steps[-1].model_output += "\nObservation: (a hallucinated observation)"
    t.steps.append(Step(index=9, model_output="Thought: something after the answer", code="print(1)"))
    t.user_prompt += "\n\nBegin your first Thought with exactly this text and continue from it:\nParis, I recall."
    msgs = student_messages(t, tools_text="def web_search(query: str) -> str:\n    ...", max_steps=7)

    system = msgs[0]["content"]
    assert msgs[0]["role"] == "system" and "TEACHER" not in system
    assert system.startswith(load_prompt("codeact_student")["system"].split("{{")[0].strip()[:40])
    assert "def web_search(query: str) -> str:" in system and "at most 7 steps" in system
    assert msgs[1] == {"role": "user", "content": "Task: What is the capital of France?"}
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert msgs[2]["content"].startswith("Thought: Paris, I recall.")
    assert all(m["content"].startswith("Observation:\n") for m in msgs[3::2][:-1] if m["role"] == "user")
    assert msgs[3]["content"] == "Observation:\nParis is in France."
    assert msgs[-1]["content"].endswith("final_answer('Paris')\n```<end_code>")


def test_tool_listing_comes_from_the_registry_for_the_recorded_tools():
    from agentkd.curate import tools_text_for

    text = tools_text_for(["web_search", "final_answer"], {"search": {"name": "web_search", "k": 2}})
    assert text.index("def web_search(") < text.index("def final_answer(")
    assert "Provides the final answer" in text
    msgs = student_messages(make_traj("x", tools=("final_answer",)))
    assert "def final_answer(" in msgs[0]["content"] and "web_search" not in msgs[0]["content"]
    with pytest.raises(Exception, match="not_a_tool"):
        tools_text_for(["not_a_tool"])


# -- splits ----------------------------------------------------------------------------------------------
def test_train_and_validation_never_share_a_task(tmp_path):
    from datasets import load_from_disk

    trajs = [make_traj(f"t{i}", s, codes=[f"print({i}, {s})"]) for i in range(120) for s in range(3)]
    res = run_curate(tmp_path, trajs, validation_fraction=0.2, seed=3)
    ds = load_from_disk(str(res.out))
    train, val = set(ds["train"]["task_key"]), set(ds["validation"]["task_key"])
    assert train and val and not (train & val)
    assert len(train | val) == 120 and len(val) == 24
    assert len(ds["train"]) + len(ds["validation"]) == 360
    pairs = load_from_disk(str(res.out / "pairs"))
    assert not set(pairs["train"]["task_key"]) & val and not set(pairs["validation"]["task_key"]) & train


def test_split_is_seeded_and_deterministic():
    from agentkd.curate.pipeline import split_tasks

    keys = {f"s/{i}" for i in range(200)}
    a, b = split_tasks(keys, 0.1, 0), split_tasks(keys, 0.1, 0)
    assert a == b and len(a) == 20
    assert split_tasks(keys, 0.1, 1) != a
    assert split_tasks({"a", "b"}, 0.1, 0) and len(split_tasks({"a", "b"}, 0.1, 0)) == 1


# -- dedupe ----------------------------------------------------------------------------------------------
def test_dedupe_on_normalised_actions_within_a_task(tmp_path):
    from datasets import load_from_disk

    trajs = [
        make_traj("A", 0, codes=["r = web_search('x')\nprint(r)"], thought="First I search."),
        make_traj("A", 1, codes=["r   =  web_search(\"x\")   # look it up\n\nprint( r )"], thought="Other words."),
        make_traj("B", 0, codes=["r = web_search('x')\nprint(r)"]),
        make_traj("B", 1, codes=["r = web_search('y')\nprint(r)"]),
        make_traj("C", 0, codes=["r = web_search('x')\nprint(r)"]),  # same code as A, another task: kept
    ]
    res = run_curate(tmp_path, trajs, validation_fraction=0)
    f = {x["name"]: x["removed"] for x in res.card["filters"]}
    assert f["duplicate"] == 1
    rows = load_from_disk(str(res.out))["train"]
    assert sorted(zip(rows["task_key"], rows["sample_index"], strict=True)) == [
        ("synth/A", 0), ("synth/B", 0), ("synth/B", 1), ("synth/C", 0)]


def test_near_duplicates_across_tasks_only_when_enabled(tmp_path):
    body = "\n".join(f"v{i} = web_search('query number {i}')\nprint(v{i}[:100])" for i in range(12))
    trajs = [make_traj("P", codes=[body + "\nprint('p')"]), make_traj("Q", codes=[body + "\nprint('q')"]),
             make_traj("R", codes=["import math\nprint(math.pi * 3)"])]
    off = run_curate(tmp_path, trajs, name="off", validation_fraction=0)
    on = run_curate(tmp_path, trajs, name="on", validation_fraction=0, near_dup_threshold=0.8)
    assert off.card["splits"]["train"]["rows"] == 3
    assert {x["name"]: x["removed"] for x in on.card["filters"]}["near_duplicate"] == 1
    assert on.card["splits"]["train"]["rows"] == 2


def test_normalize_code_ignores_comments_and_layout_only():
    from agentkd.curate.dedupe import normalize_code

    assert normalize_code("x=1 # c\n\n\ny = [1,\n 2]") == normalize_code("x = 1\ny = [1, 2]")
    assert normalize_code("x = 1") != normalize_code("x = 2")
    assert normalize_code("if x:\n  y(  # broken") == normalize_code("if x:\n      y(")  # regex fallback


# -- filters ---------------------------------------------------------------------------------------------
def _filter_mix() -> list[Trajectory]:
    long_obs = "word " * 3000
    return [
        make_traj("ok1"), make_traj("ok2"), make_traj("ok3"),
        make_traj("infra", status="error"),
        make_traj("nogold1", answer=None), make_traj("nogold2", answer=None),
        make_traj("wrong1", final="London"), make_traj("wrong2", final="Rome"), make_traj("ok1", 1, final="Berlin"),
        make_traj("parse", parse_error_step=True),
        make_traj("maxsteps", status="max_steps"),
        make_traj("recovered1", codes=["1/0", "print(2)"], errors={0: "ZeroDivisionError: division by zero"}),
        make_traj("recovered2", codes=["x[1]", "print(2)"], errors={0: "NameError: name 'x' is not defined"}),
        make_traj("long", observation=long_obs),
    ]


def test_filters_report_counts_in_order_and_route_negatives(tmp_path, tiny_qwen):
    res = run_curate(tmp_path, _filter_mix(), student=str(tiny_qwen), max_tokens=1500, validation_fraction=0)
    card = res.card
    assert [f["name"] for f in card["filters"]] == list(FILTERS)
    removed = {f["name"]: f["removed"] for f in card["filters"]}
    assert removed == {"infra_error": 1, "unscorable": 2, "incorrect": 3, "parse_error": 1, "max_steps": 1,
                       "exec_error": 0, "length_cap": 1, "duplicate": 0, "near_duplicate": 0}
    assert card["filters"][-1]["remaining"] == 14 - 9 == card["splits"]["train"]["rows"]
    assert card["unscorable"] == {"count": 2, "reasons": {"no gold answer": 2}}
    assert card["splits"]["rejected"]["rows"] == 3
    assert card["splits"]["pairs/train"]["rows"] == 1  # only ok1 has a correct and an incorrect sample

    strict = run_curate(tmp_path, _filter_mix(), name="strict", student=str(tiny_qwen), max_tokens=1500,
                        keep_recovered=False, validation_fraction=0)
    assert {f["name"]: f["removed"] for f in strict.card["filters"]}["exec_error"] == 2
    assert strict.card["splits"]["train"]["rows"] == 3


def test_no_gold_is_unscorable_not_rejected(tmp_path):
    from datasets import load_from_disk

    trajs = [make_traj("a"), make_traj("b", answer=None, final="anything")]
    res = run_curate(tmp_path, trajs, validation_fraction=0)
    ds = load_from_disk(str(res.out))
    assert ds["train"]["task_key"] == ["synth/a"] and len(ds["rejected"]) == 0
    assert res.card["unscorable"]["count"] == 1


# -- exports ---------------------------------------------------------------------------------------------
def test_exports_parse_with_the_right_roles_and_flags(tmp_path):
    from datasets import load_from_disk

    trajs = [make_traj(f"t{i}", s, codes=[f"r = web_search('{i} {s}')\nprint(r)", "print(r[:9])"],
                       final="Paris" if s else "Oslo") for i in range(10) for s in range(2)]
    res = run_curate(tmp_path, trajs, validation_fraction=0.2)
    ds = load_from_disk(str(res.out))
    assert set(ds) == {"train", "validation", "rejected"} and len(ds["rejected"]) == 10
    train = ds["train"]
    ex = res.out / "exports"

    trl = [json.loads(line) for line in (ex / "trl.jsonl").read_text().splitlines()]
    assert [r["messages"] for r in trl] == train["messages"]
    assert len((ex / "trl_validation.jsonl").read_text().splitlines()) == len(ds["validation"])

    share = json.loads((ex / "sharegpt.json").read_text())
    assert len(share) == len(train)
    for rec, msgs in zip(share, train["messages"], strict=True):
        assert rec["system"] == msgs[0]["content"]
        assert [c["from"] for c in rec["conversations"]] == ["human", "gpt", "observation", "gpt", "observation", "gpt"]
        assert [c["value"] for c in rec["conversations"]] == [m["content"] for m in msgs[1:]]
    info = json.loads((ex / "dataset_info.json").read_text())
    assert info["agentkd_train"]["file_name"] == "sharegpt.json"
    assert info["agentkd_train"]["tags"]["observation_tag"] == "observation"

    axo = [json.loads(line) for line in (ex / "axolotl.jsonl").read_text().splitlines()]
    for rec in axo:
        assert [(m["role"], m["train"]) for m in rec["messages"]] == [
            ("system", False), ("user", False), ("assistant", True), ("user", False), ("assistant", True),
            ("user", False), ("assistant", True)]

    pairs = load_from_disk(str(res.out / "pairs"))
    p = pairs["train"][0]
    assert set(pairs["train"].column_names) == {"prompt", "chosen", "rejected", "task_key"}
    assert [m["role"] for m in p["prompt"]] == ["system", "user"]
    assert p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant"
    assert "final_answer('Paris')" in p["chosen"][-1]["content"]
    assert "final_answer('Oslo')" in p["rejected"][-1]["content"]
    assert len(pairs["train"]) + len(pairs["validation"]) == 10


def test_metadata_columns(tmp_path):
    from datasets import load_from_disk

    res = run_curate(tmp_path, [make_traj("m", 2, domain="math", source="gsm", answer="4", final="4",
                                          prefix="Two and two.")], validation_fraction=0)
    row = load_from_disk(str(res.out))["train"][0]
    assert {k: row[k] for k in row if k != "messages"} == {
        "task_key": "gsm/m", "task_id": "m", "domain": "math", "source": "gsm", "teacher": "openai/teacher",
        "score": 1.0, "prefix_mode": "prefill", "source_run": str(tmp_path / "run-ds"), "sample_index": 2,
        "num_steps": 2}


# -- card ------------------------------------------------------------------------------------------------
def test_card_numbers_match_the_inputs_and_sha_is_stable(tmp_path, tiny_qwen):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    trajs = [make_traj(f"f{i}", codes=[f"r = web_search('{i}')\nprint(r)"] * (1 + i % 3)) for i in range(6)]
    trajs += [make_traj(f"m{i}", domain="math", source="gsm", answer="4", final="4",
                        codes=["print(2 + 2)"], tools=("final_answer",)) for i in range(3)]
    run = write_run(tmp_path / "run", trajs)
    cfg = CurateConfig(runs=[str(run)], student=str(tiny_qwen), validation_fraction=0)
    a = curate(cfg, tmp_path / "a")
    b = curate(cfg, tmp_path / "b")
    card = a.card
    assert card["sha256"] == b.card["sha256"] and len(card["sha256"]) == 64
    assert json.loads((tmp_path / "a" / "card.json").read_text()) == card
    assert "| train | 9 | 9 |" in (tmp_path / "a" / "card.md").read_text()
    assert card["by_domain"] == {"input": {"factual": 6, "math": 3}, "kept": {"factual": 6, "math": 3}}
    assert card["by_source"]["input"] == {"synth": 6, "gsm": 3}
    assert card["steps_histogram"] == {"2": 5, "3": 2, "4": 2}
    assert card["tool_calls"] == {"final_answer": 9, "web_search": 12}
    assert card["teacher_cost_usd"]["kept"] == pytest.approx(0.01 * (5 * 2 + 2 * 3 + 2 * 4))
    assert card["runs"][0]["path"] == str(run) and card["runs"][0]["config_sha256"]
    assert card["runs"][0]["summary_sha256"] and card["runs"][0]["lines"] == 9

    tok = AutoTokenizer.from_pretrained(str(tiny_qwen))
    rows = load_from_disk(str(tmp_path / "a"))["train"]["messages"]
    lens = sorted(len(tok.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"]) for m in rows)
    assert (card["tokens"]["min"], card["tokens"]["max"]) == (lens[0], lens[-1])
    assert card["tokens"]["median"] == lens[4]

    trajs[0].steps[0].observation = "something else"
    c = curate(CurateConfig(runs=[str(write_run(tmp_path / "run2", trajs))], student=None, validation_fraction=0),
               tmp_path / "c")
    assert c.card["sha256"] != card["sha256"]


# -- bad input and atomic writes -------------------------------------------------------------------------
def _lines(trajs) -> list[str]:
    return [t.model_dump_json() + "\n" for t in trajs]


def test_bad_lines_name_file_and_line_and_nothing_is_written(tmp_path):
    run = write_run(tmp_path / "run", [])
    lines = _lines([make_traj("a"), make_traj("b"), make_traj("c")])
    lines.insert(1, lines[1][:40] + "\n")            # line 2: corrupt
    lines.insert(3, '{"foo": 1}\n')                  # line 4: foreign
    (run / "trajectories.jsonl").write_text("".join(lines))
    with pytest.raises(CurateError) as e:
        curate(CurateConfig(runs=[str(run)], student=None), tmp_path / "ds")
    msg = str(e.value)
    assert f"{run / 'trajectories.jsonl'}:2: corrupt line" in msg and "+1 more" in msg and "\n" not in msg
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob("ds.tmp-*"))

    res = curate(CurateConfig(runs=[str(run)], student=None, on_bad_line="skip", validation_fraction=0),
                 tmp_path / "ds")
    assert res.card["input"]["bad_lines"] == 2 and res.card["splits"]["train"]["rows"] == 3
    assert res.card["input"]["bad_line_examples"][1].endswith(":4: not a trajectory (task: Field required)")


def test_unknown_schema_version_is_an_error(tmp_path):
    run = write_run(tmp_path / "run", [])
    t = make_traj("a").model_dump(mode="json")
    t["schema_version"] = 99
    (run / "trajectories.jsonl").write_text(_lines([make_traj("b")])[0] + json.dumps(t) + "\n")
    from agentkd.core.errors import AgentkdError

    for score in (True, False):  # found by score_run, or by curate's own reader
        with pytest.raises(AgentkdError, match=r"trajectories.jsonl(:|: line )2: .*schema_version 99") as e:
            curate(CurateConfig(runs=[str(run)], student=None, score=score), tmp_path / "ds")
        assert e.value.exit_code == 2


def test_a_crash_mid_write_leaves_no_dataset_and_keeps_the_old_one(tmp_path, monkeypatch):
    from agentkd.curate import export

    trajs = [make_traj(f"t{i}") for i in range(5)]
    run = write_run(tmp_path / "run", trajs)
    cfg = CurateConfig(runs=[str(run)], student=None, overwrite=True)
    first = curate(cfg, tmp_path / "ds")
    before = {p.relative_to(first.out): p.read_bytes() for p in first.out.rglob("*") if p.is_file()}

    def boom(self, messages):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export.ExportWriter, "add", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        curate(cfg, tmp_path / "ds")
    after = {p.relative_to(first.out): p.read_bytes() for p in first.out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "run"]

    with pytest.raises(CurateError, match="already exists"):
        curate(cfg.model_copy(update={"overwrite": False}), tmp_path / "ds")

    # what a killed curate (SIGKILL: no cleanup ran) leaves is a tmp folder, never a half dataset; the next run
    # removes it when its process is gone
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"ds.tmp-{dead.pid}-abcd" / "train").mkdir(parents=True)
    monkeypatch.undo()
    curate(cfg, tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "run"]


def test_user_turn_is_exactly_the_prompt_templates_rendering(tmp_path):
    from agentkd.agent.prompts import render

    t = make_traj("x")
    t.task.question = "  Who wrote {{ x }}?\n Answer briefly.  "
    assert student_messages(t)[1]["content"] == render("codeact_student", "user", question=t.task.question)
    custom = tmp_path / "mine.yaml"
    custom.write_text("system: |\n  Tools: {{ tools }}\nuser: |\n  Q: {{ question | upper }} ({{ question }})\n")
    msgs = student_messages(t, prompt=str(custom), tools_text="T")
    assert msgs[0]["content"] == "Tools: T"
    assert msgs[1]["content"] == render(str(custom), "user", question=t.task.question)


def test_push_to_hub_offline_is_one_clear_line_and_the_dataset_stays(tmp_path, monkeypatch):
    from agentkd.curate.pipeline import HubError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError) as e:
        run_curate(tmp_path, [make_traj("a"), make_traj("b")], push_to_hub="someone/agentkd-test")
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    assert "push_to_hub 'someone/agentkd-test' failed" in str(e.value) and "is complete" in str(e.value)
    assert (tmp_path / "ds" / "card.json").exists()
