"""Shared test set-up: offline environment, paths to ../shared data, and a tiny real Qwen2 model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "data" / "benchmarks"
# suites find the paper's files relative to the working directory; tests may run from anywhere
if SHARED_BENCH.is_dir():
    os.environ.setdefault("AGENTKD_DATA", str(SHARED_BENCH))


def tracked_copy(dst: Path) -> Path:
    """A copy of the checkout's files as a fresh clone would have them: git-tracked files, plus new files git
    does not ignore (so uncommitted work is tested too), without build outputs, venvs or runs."""
    import shutil
    import subprocess

    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


def local_backend() -> str | None:
    """The first isolating local sandbox backend that works here (what `auto` picks without Docker)."""
    from agentkd.sandbox import SandboxConfig
    from agentkd.sandbox.backends import backend_class

    for name in ("forkserver", "bwrap", "unshare"):
        if backend_class(name).unavailable(SandboxConfig(backend=name)) is None:
            return name
    return None


def wait_until(cond, timeout: float = 5.0) -> bool:
    """Poll `cond` every 20 ms until it holds or `timeout` passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def killed(pid: int) -> bool:
    """Gone, a zombie, or with SIGKILL pending: it will never run code again."""
    try:
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":\t" in line)
    except OSError:
        return True
    pending = int(fields.get("SigPnd", "0"), 16) | int(fields.get("ShdPnd", "0"), 16)
    return fields.get("State", "").startswith(("Z", "X")) or bool(pending & (1 << 8))


def procs_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (to check that sandboxed processes are gone)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


@pytest.fixture(scope="session")
def shared_bench() -> Path:
    """../shared/data/benchmarks, or skip: a user's clone does not have it."""
    if not SHARED_BENCH.is_dir():
        pytest.skip(f"needs the paper's benchmark files at {SHARED_BENCH} (present in the dev/CI workspace only)")
    return SHARED_BENCH


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    """A tiny random Qwen2 with a BPE tokenizer trained here (builds in about a second)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tiny-qwen2")
    corpus = [
        "Thought: I will search for the answer.", "Observation: Paris is the capital of France.",
        "def f(x):\n    return x + 1\nprint(f(2))", "final_answer('Paris')", "The quick brown fox jumps.",
        "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15", "<end_code> ```py ``` web_search(query)",
    ] * 20
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     bos_token=None, unk_token=None)
    hf_tok.chat_template = CHATML
    hf_tok.save_pretrained(out)
    cfg = Qwen2Config(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id, tie_word_embeddings=True)
    import torch

    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen25(tiny_qwen, tmp_path_factory) -> Path:
    """The tiny Qwen2 with Qwen2.5's stock chat template (TRL's copy, read from the installed package), so
    the curation stage picks TRL's generation-tagged qwen2_5 training template for it."""
    import shutil

    from transformers import AutoTokenizer

    from agentkd.curate.templates import trl_templates_dir

    out = tmp_path_factory.mktemp("tiny-qwen25")
    for f in tiny_qwen.iterdir():
        shutil.copy(f, out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    tok = AutoTokenizer.from_pretrained(tiny_qwen)
    tok.chat_template = (trl_templates_dir() / "qwen2_5.jinja").read_text(encoding="utf-8")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen_varied(tiny_qwen, tmp_path_factory) -> Path:
    """The tiny model with seeded noise on its weights: greedy decoding of the plain random model (tied
    embeddings) only repeats the last token; this one writes varied text, so a stop string can land mid-way."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny-qwen2-varied")
    for f in tiny_qwen.iterdir():
        if "token" in f.name or f.name.endswith((".jinja", "vocab.json", "merges.txt")):
            shutil.copy(f, out)
    base = AutoModelForCausalLM.from_pretrained(tiny_qwen)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in base.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 0.5)
    base.save_pretrained(out)
    return out


def start_server(*args: str, timeout_s: float = 300):
    """`agentkd serve ARGS --port 0 --device cpu` as a real process on 127.0.0.1, healthy: (process, /v1 URL).
    Its output is kept drained; fails the test with the last lines if it does not come up."""
    import re
    import subprocess
    import sys
    import threading

    import httpx

    cmd = [sys.executable, "-m", "agentkd", "serve", *args, "--port", "0", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    url, lines, deadline = None, [], time.time() + timeout_s
    while time.time() < deadline and url is None:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if m := re.search(r"on (http://127\.0\.0\.1:\d+/v1)", line):
            url = m.group(1)
    if url is None:
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines[-30:]))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    for _ in range(100):
        try:
            if httpx.get(url.replace("/v1", "/health"), timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url


@pytest.fixture(scope="session")
def smollm2_server():
    """`agentkd serve embedded:smollm2-135m` as a real process on 127.0.0.1; yields its /v1 URL."""
    proc, url = start_server("embedded:smollm2-135m")
    yield url
    proc.terminate()
    proc.wait(timeout=30)
