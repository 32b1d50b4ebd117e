"""Loss masks (issue 13): training templates and `check_masks` on real tokenizers (the embedded SmolLM2, a tiny
Qwen2 with the Qwen2.5 template and with plain ChatML), checked against TRL's own SFTTrainer tokenisation."""

from __future__ import annotations

import sys

import pytest

from agentkd.curate.masks import MaskError, check_masks
from agentkd.curate.templates import (
    CHATML_FILE,
    chatml_for,
    load_student_tokenizer,
    resolve_template,
    trl_templates_dir,
)

SYSTEM = "You are a CodeAct agent. Answer with final_answer()."


def conversation(i: int, *, system: bool = True, user: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM}] if system else []
    return [
        *msgs,
        {"role": "user", "content": user or f"Task {i}: what is the capital of France?"},
        {"role": "assistant", "content": f"Thought: I will search ({i}).\n```py\nprint(web_search('France'))\n```<end_code>"},
        {"role": "user", "content": "Observation:\nParis is the capital of France. 0 1 2"},
        {"role": "assistant", "content": " Thought: done — é ü.\n```py\nfinal_answer('Paris')\n```<end_code>"},
    ]


def save(tmp_path, convs: list[list[dict]], name: str = "ds"):
    from datasets import Dataset, DatasetDict

    rows = [{"messages": c, "task_key": f"t{i}", "score": 1.0} for i, c in enumerate(convs)]
    out = tmp_path / name
    DatasetDict(train=Dataset.from_list(rows), validation=Dataset.from_list(rows[:1])).save_to_disk(str(out))
    return out


GOOD = [conversation(i, system=i % 3 != 0) for i in range(12)]


@pytest.fixture(scope="module")
def smol() -> str:
    from agentkd.models.embedded import prepare_embedded

    return str(prepare_embedded(progress=False))


@pytest.fixture(scope="module")
def qwen25(tiny_qwen25) -> str:
    return str(tiny_qwen25)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save(tmp_path_factory.mktemp("good"), GOOD)


# ---------------------------------------------------------------------------------------------------------------
# templates

def test_family_detection_picks_trl_or_agentkd_template(smol, qwen25, tiny_qwen):
    assert load_student_tokenizer(qwen25).agentkd_template_source == "trl:qwen2_5_training.jinja"
    assert load_student_tokenizer(qwen25).chat_template == (trl_templates_dir() / "qwen2_5_training.jinja").read_text()
    for model in (smol, str(tiny_qwen)):
        assert load_student_tokenizer(model).agentkd_template_source == f"agentkd:{CHATML_FILE.name}"


def test_chatml_template_renders_byte_identical_to_stock(smol, tiny_qwen):
    from transformers import AutoTokenizer

    convs = [*GOOD[:3], [{"role": "user", "content": "hi"}], [{"role": "system", "content": "s"}],
             [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b\n"}, {"role": "user", "content": ""}]]
    for model in (smol, tiny_qwen):
        tok = AutoTokenizer.from_pretrained(model)
        ours = chatml_for(tok)
        assert ours is not None and "{% generation %}" in ours.replace("{%-", "{%")
        for conv in convs:
            for agp in (False, True):
                stock = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=agp)
                assert tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=agp, chat_template=ours) == stock
    smol_tok = AutoTokenizer.from_pretrained(smol)
    # SmolLM2 inserts its default system prompt; the plain ChatML one does not: both are reproduced
    assert "named SmolLM" in smol_tok.apply_chat_template(convs[3], tokenize=False, chat_template=chatml_for(smol_tok))
    # a template that is not ChatML is not claimed
    assert "+ '\n'}}" in smol_tok.chat_template  # (a real newline in the Jinja string)
    smol_tok.chat_template = smol_tok.chat_template.replace("+ '\n'}}", "+ '\n\n'}}")
    assert chatml_for(smol_tok) is None


# ---------------------------------------------------------------------------------------------------------------
# the check on good data: trained tokens are exactly the assistant turns (+ end of turn)

def trained_texts(tok, report) -> list[list[str]]:
    """Per example, the decoded runs of trained tokens."""
    out = []
    for ids, mask in zip(report.input_ids, report.masks, strict=True):
        runs, cur = [], []
        for t, m in zip(ids, mask, strict=True):
            if m:
                cur.append(t)
            elif cur:
                runs.append(cur)
                cur = []
        out.append([tok.decode(r) for r in [*runs, cur] if r])
    return out


@pytest.mark.parametrize("which, before, after", [("smol", "", "<|im_end|>"), ("qwen25", "\n", "<|im_end|>\n"),
                                                  ("chatml", "", "<|im_end|>")])
def test_good_dataset_trains_exactly_the_assistant_turns(which, before, after, request, good):
    model = {"smol": "smol", "qwen25": "qwen25", "chatml": "tiny_qwen"}[which]
    model = str(request.getfixturevalue(model))
    tok = load_student_tokenizer(model)
    report = check_masks(good, model, keep_tokens=True, show=1)
    assert report.examples == len(GOOD) and report.truncated == 0
    want = [[before + m["content"] + after for m in conv if m["role"] == "assistant"] for conv in GOOD]
    assert trained_texts(tok, report) == want
    assert report.trained_tokens == sum(map(sum, report.masks))
    assert report.total_tokens == sum(map(len, report.input_ids))
    assert 0 < report.trained_share == report.trained_tokens / report.total_tokens < 1
    # the example shown: trained pieces are the assistant turns, in ⟦…⟧ in plain text
    assert [t for t, on in report.example_spans if on] == want[1]
    assert "".join(t for t, _ in report.example_spans) == tok.apply_chat_template(GOOD[1], tokenize=False)
    assert f"⟦{want[1][0]}⟧" in report.example and "⟦" not in report.example.split(f"⟦{want[1][0]}")[0]


# ---------------------------------------------------------------------------------------------------------------
# the same masks as TRL's SFTTrainer

@pytest.mark.parametrize("which", ["smol", "qwen25"])
def test_masks_match_trl_sft_trainer(which, request, tmp_path, tiny_qwen):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = str(request.getfixturevalue(which))
    tok = load_student_tokenizer(model)
    # one example whose last assistant turn is cut by max_length, so truncation is compared too
    convs = [*GOOD[:5], conversation(99, user="Task: " + "long prompt words " * 12)]
    lengths = [len(tok.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"]) for c in convs]
    cap = lengths[-1] - 6  # inside the last assistant turn
    assert max(lengths[:-1]) < cap
    ds = Dataset.from_list([{"messages": c} for c in convs])
    report = check_masks(ds, model, max_length=cap, keep_tokens=True, tokenizer=tok)
    assert report.truncated == 1
    lm = AutoModelForCausalLM.from_pretrained(model if which == "smol" else tiny_qwen)
    args = SFTConfig(output_dir=str(tmp_path / "out"), assistant_only_loss=True, max_length=cap, report_to=[],
                     use_cpu=True, bf16=False, dataset_num_proc=None)
    trainer = SFTTrainer(model=lm, args=args, train_dataset=ds, processing_class=tok)
    trl_rows = trainer.train_dataset
    assert len(trl_rows) == len(convs)
    assert [r["input_ids"] for r in trl_rows] == report.input_ids
    assert [[int(label != -100) for label in r["labels"]] for r in trl_rows] == report.masks


# ---------------------------------------------------------------------------------------------------------------
# failures

def test_template_without_generation_markers_fails_naming_model_and_fix(smol, good, tmp_path):
    from transformers import AutoTokenizer

    stock = tmp_path / "stock.jinja"
    stock.write_text(AutoTokenizer.from_pretrained(smol).chat_template)
    for template in ("stock", str(stock)):
        with pytest.raises(MaskError) as e:
            check_masks(good, smol, template=template)
        msg = str(e.value)
        assert "\n" not in msg and smol in msg and "no {% generation %} markers" in msg
        assert "agentkd:chatml_training.jinja" in msg
    assert MaskError.exit_code == 2


def test_assistant_turns_cut_off_by_max_length_fail_naming_the_example(smol, tmp_path):
    convs = [GOOD[0], conversation(1, user="Task: " + "a very long prompt " * 40), GOOD[2]]
    ds = save(tmp_path, convs)
    assert check_masks(ds, smol, max_length=2000).examples == 3
    with pytest.raises(MaskError) as e:
        check_masks(ds, smol, max_length=150)
    msg = str(e.value)
    assert msg.startswith(f"{ds}[train][1]: trains zero tokens") and "max_length=150" in msg and "\n" not in msg


BROKEN_USER = CHATML_FILE.read_text().replace(
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}",
    "{{- '<|im_start|>' + message['role'] + '\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{- '\\n' }}")
BROKEN_HEADER = CHATML_FILE.read_text().replace(
    "{{- '<|im_start|>assistant\\n' }}\n        {%- generation %}",
    "{%- generation %}{{- '<|im_start|>assistant\\n' }}")
BROKEN_EOT = CHATML_FILE.read_text().replace(
    "{{- message['content'] + '<|im_end|>' }}\n        {%- endgeneration %}",
    "{{- message['content'] }}{%- endgeneration %}{{- '<|im_end|>' }}")

BROKEN_LAST_ONLY = CHATML_FILE.read_text().replace("{%- generation %}", "{%- if loop.last %}{%- generation %}").replace(
    "{{- message['content'] + '<|im_end|>' }}\n        {%- endgeneration %}",
    "{{- message['content'] + '<|im_end|>' }}\n        {%- endgeneration %}{%- else %}"
    "{{- message['content'] + '<|im_end|>' }}{%- endif %}")


@pytest.mark.parametrize("template, words", [
    (BROKEN_USER, "outside the assistant turns, first in the user message 0"),
    (BROKEN_HEADER, "outside the assistant turns, first in the template's text before the assistant message 1 (its header)"),
    (BROKEN_EOT, "end-of-turn token '<|im_end|>' after assistant message 1 is not trained"),
    (BROKEN_LAST_ONLY, "assistant message 1 is not fully trained (masked from 'Thought: I will search (0)."),
])
def test_hand_broken_templates_fail(template, words, tiny_qwen, good):
    for broken in (BROKEN_USER, BROKEN_HEADER, BROKEN_EOT, BROKEN_LAST_ONLY):
        assert broken != CHATML_FILE.read_text()
    with pytest.raises(MaskError) as e:
        check_masks(good, str(tiny_qwen), template=template)
    assert str(e.value).startswith(f"{good}[train][0]: ") and words in str(e.value), str(e.value)


def test_worker_processes_give_the_same_report_and_first_error(tiny_qwen, tmp_path):
    model = str(tiny_qwen)
    convs = [conversation(i, system=i % 2 == 0) for i in range(40)]
    ds = save(tmp_path, convs)
    one = check_masks(ds, model, batch_size=4, keep_tokens=True, show=13)
    two = check_masks(ds, model, batch_size=4, keep_tokens=True, show=13, num_proc=2)
    assert one == two and one.examples == 40 and "Task 13" in one.example
    # bad examples at 17 and 33 (of 40, in different worker slices): the lowest index is reported
    for i in (17, 33):
        convs[i] = conversation(i, user="x " * 300)
    ds = save(tmp_path, convs, "two-bad")
    for n in (1, 2):
        with pytest.raises(MaskError, match=r"\[train\]\[17\]: trains zero tokens"):
            check_masks(ds, model, batch_size=4, max_length=200, num_proc=n)


def test_resolve_template_names(qwen25):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen25)
    assert resolve_template(tok, "llama3").source == "trl:llama3_training.jinja"
    assert resolve_template(tok, "chatml").source == "agentkd:chatml_training.jinja"
    with pytest.raises(MaskError, match="not a file"):
        resolve_template(tok, "no-such-template")
    assert load_student_tokenizer(f"local:{qwen25}", "phi3").agentkd_template_source == "trl:phi3_training.jinja"
    with pytest.raises(MaskError, match="not a local model"):
        load_student_tokenizer("local:/no/such/model")


# ---------------------------------------------------------------------------------------------------------------
# CLI

def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from agentkd.cli import main

    monkeypatch.setattr(sys, "argv", ["agentkd", "curate", "check-masks", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
        sys.exit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_exit_codes_and_report(monkeypatch, capsys, smol, tiny_qwen, good, tmp_path):
    rc, out, err = cli(monkeypatch, capsys, good, "--model", smol)
    assert rc == 0, err
    assert f"{good}[train]: {len(GOOD)} examples OK" in out and "trained tokens: " in out and "%" in out
    assert "⟦Thought: I will search (0)." in out
    long = save(tmp_path, [conversation(0, user="x " * 400)], "long")
    broken = tmp_path / "broken.jinja"
    broken.write_text(BROKEN_USER)
    capsys.readouterr()  # (save_to_disk's progress bar)
    for args, words in [((good, "--model", smol, "--template", "stock"), "no {% generation %} markers"),
                        ((long, "--model", smol, "--max-length", "64"), f"{long}[train][0]: trains zero tokens"),
                        ((good, "--model", tiny_qwen, "--template", broken), "outside the assistant turns"),
                        ((good, "--model", smol, "--split", "test"), "no split 'test'")]:
        rc, out, err = cli(monkeypatch, capsys, *args)
        assert rc == 2 and out == "", (args, out, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and words in err, err
