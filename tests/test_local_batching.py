"""Batching of concurrent requests in the local transformers model, on a tiny real Qwen2 (varied weights),
with shared-prefix (cascade) attention and with the plain per-row cache: one batch per gather, batched
greedy text equal to each request run alone (left padding with attention masks), per-request stop strings /
max_tokens / n / prefill / seeds in a mixed batch, usage without padding, rows leaving the batch as they
end, split requests and failures confined to their batch."""

from __future__ import annotations

import asyncio

import pytest

from agentkd.models.config import LocalBatchConfig
from agentkd.models.local import TransformersModel

# prompts of different lengths, so the batch is left-padded
PROMPTS = [
    [{"role": "user", "content": "Thought: the capital of France?"}],
    [{"role": "user", "content": "def f(x):\n    return x + 1\nprint(f(2)) and the quick brown fox jumps."}],
    [{"role": "system", "content": "Observation: Paris is the capital of France."},
     {"role": "user", "content": "final_answer('Paris') 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15"}],
    [{"role": "user", "content": "web_search(query) 0 1 2"}],
]
SYSTEM = {"role": "system", "content": "Thought: I will search for the answer. Observation: Paris is the capital."}


@pytest.fixture(scope="module", params=["shared_prefix", "plain"])
def model(tiny_qwen_varied, request):
    m = TransformersModel(tiny_qwen_varied, name="tiny-varied", dtype="float32",
                          batch=LocalBatchConfig(attention=request.param))
    assert m.worker.cascade == (request.param == "shared_prefix")
    return m


@pytest.fixture
def calls(model):
    """The batches the worker runs from here on (the rows of each)."""
    model.worker.batches.clear()
    return model.worker.batches


async def alone(model, requests):
    return [await model.generate(msgs, **kw) for msgs, kw in requests]


async def together(model, requests):
    return await asyncio.gather(*(model.generate(msgs, **kw) for msgs, kw in requests))


@pytest.mark.parametrize("system", [False, True], ids=["distinct", "shared-system-prompt"])
async def test_gathered_greedy_requests_form_one_batch_with_the_texts_they_get_alone(model, calls, system):
    prompts = [[SYSTEM, *p] for p in PROMPTS] if system else PROMPTS
    reqs = [(p, {"temperature": 0.0, "max_tokens": 24}) for p in prompts]
    lens = [len(model.encode_prompt(p, None)["input_ids"][0]) for p in prompts]
    assert len(set(lens)) == len(lens)
    single = await alone(model, reqs)
    assert calls == [1, 1, 1, 1]
    calls.clear()
    batched = await together(model, reqs)
    assert calls == [4], "one batch for the whole gather"
    # with a common system prompt, its tokens are prefilled once for the batch (padding after them)
    assert (model.worker.shared[-1] > 16) == system
    assert [c[0].text for c in batched] == [c[0].text for c in single]
    assert len({c[0].text for c in single}) == 4
    # and what transformers' own greedy `generate` gives (the reference decode loop)
    import torch

    for p, [c] in zip(prompts, single, strict=True):
        ids = model.encode_prompt(p, None)
        with torch.no_grad():
            ref = model.model.generate(**ids, max_new_tokens=24, do_sample=False)
        assert c.text == model.tokenizer.decode(ref[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    for [b], [s], n in zip(batched, single, lens, strict=True):
        assert b.usage == s.usage and b.usage.prompt_tokens == n  # padding is not counted
        assert len(b.logprobs) in (b.usage.completion_tokens, b.usage.completion_tokens - 1)  # EOS not kept
        assert all(lp <= 0 for lp in b.logprobs)
        assert b.logprobs == pytest.approx(s.logprobs, abs=1e-4)


async def test_mixed_batch_honours_each_requests_stop_max_tokens_n_prefill_and_seed(model, calls):
    import re

    [free] = await model.generate(PROMPTS[0], temperature=0.0, max_tokens=40)
    stop = next(w.group() for w in re.finditer(r"[A-Za-z]{3,}", free.text) if free.text.find(w.group()) > 0)
    reqs = [
        (PROMPTS[0], {"temperature": 0.0, "max_tokens": 40, "stop": ["never-there", stop]}),
        (PROMPTS[1], {"temperature": 0.0, "max_tokens": 5}),
        (PROMPTS[2], {"n": 3, "temperature": 1.0, "top_p": 0.9, "max_tokens": 30, "seed": 11}),
        (PROMPTS[3], {"temperature": 0.0, "max_tokens": 20, "prefill": "Thought: I will"}),
        (PROMPTS[0], {"n": 2, "temperature": 0.0, "max_tokens": 12}),
    ]
    calls.clear()
    single = await alone(model, reqs)
    calls.clear()
    batched = await together(model, reqs)
    assert calls == [1 + 1 + 3 + 1 + 1], "greedy n=2 is one row; sampled n=3 is three"
    assert [[c.text for c in o] for o in batched] == [[c.text for c in o] for o in single]
    [cut], [short], samples, [pre], twins = batched
    assert cut.text == free.text[: free.text.find(stop)] and cut.finish_reason == "stop"
    assert cut.usage.completion_tokens < 40  # generation of that row stopped there, not at 40
    assert short.usage.completion_tokens == 5 and short.finish_reason == "length"
    assert len(samples) == 3 and len({c.text for c in samples}) == 3
    prompt = model.encode_prompt(PROMPTS[3], "Thought: I will")["input_ids"][0]
    assert pre.usage.prompt_tokens == len(prompt)
    assert len(twins) == 2 and twins[0].text == twins[1].text


async def test_seeded_samples_do_not_depend_on_the_batch(model, calls):
    kw = {"n": 2, "temperature": 1.0, "max_tokens": 16, "seed": 3}
    [ref] = await alone(model, [(PROMPTS[1], kw)])
    others = [(p, {"temperature": 1.0, "max_tokens": 16, "seed": s}) for s, p in enumerate(PROMPTS)]
    got = await together(model, [*others[:2], (PROMPTS[1], kw), *others[2:]])
    assert [c.text for c in got[2]] == [c.text for c in ref]
    other_seed = await model.generate(PROMPTS[1], **{**kw, "seed": 4})
    assert [c.text for c in other_seed] != [c.text for c in ref]


async def test_batch_caps_split_requests_and_a_failed_batch_fails_only_its_requests(tiny_qwen_varied, monkeypatch):
    m = TransformersModel(tiny_qwen_varied, dtype="float32", batch=LocalBatchConfig(max_sequences=2))
    kw = {"n": 5, "temperature": 1.0, "max_tokens": 10, "seed": 8}
    ref = await m.generate(PROMPTS[2], **kw)
    assert m.worker.batches == [2, 2, 1], "a request's rows are split over batches of at most 2"
    wide = TransformersModel(tiny_qwen_varied, dtype="float32")
    assert [c.text for c in await wide.generate(PROMPTS[2], **kw)] == [c.text for c in ref]
    assert wide.worker.batches == [5]

    real, seen = m.model.forward, []
    m.worker.batches.clear()

    def flaky(*args, **kw):
        seen.append(len(m.worker.batches))
        if m.worker.batches == [2]:  # the first batch of the gather below
            raise RuntimeError("out of memory (injected)")
        return real(*args, **kw)

    monkeypatch.setattr(m.model, "forward", flaky)
    reqs = [m.generate(p, temperature=0.0, max_tokens=6) for p in PROMPTS]
    out = await asyncio.gather(*reqs, return_exceptions=True)
    assert m.worker.batches == [2, 2] and seen.count(1) == 1, "the first batch failed at its first forward"
    assert all(isinstance(o, RuntimeError) for o in out[:2])
    assert all(isinstance(o, list) and o[0].usage.completion_tokens > 0 for o in out[2:])
    # the worker goes on serving
    [after] = await m.generate(PROMPTS[0], temperature=0.0, max_tokens=6)
    assert after.text == (await wide.generate(PROMPTS[0], temperature=0.0, max_tokens=6))[0].text


async def test_cancelled_request_does_not_break_the_others(model):
    slow = asyncio.ensure_future(model.generate(PROMPTS[0], temperature=0.0, max_tokens=60))
    fast = asyncio.ensure_future(model.generate(PROMPTS[1], temperature=0.0, max_tokens=60))
    await asyncio.sleep(0)
    slow.cancel()
    [c] = await fast
    assert c.usage.completion_tokens > 0
    with pytest.raises(asyncio.CancelledError):
        await slow


async def test_a_request_cancelled_while_its_batch_decodes_leaves_the_batch(model, monkeypatch):
    """The rows of a request whose caller gave up stop costing decode steps (the others go on)."""
    loop = asyncio.get_running_loop()
    rows_seen: list[int] = []
    real = model.model.forward
    kw = {"temperature": 1.0, "max_tokens": 40, "seed": 5, "stop": None}
    gone = asyncio.ensure_future(model.generate(PROMPTS[0], n=3, **kw))

    def forward(*args, **k):
        rows_seen.append(k["input_ids"].shape[0])
        if len(rows_seen) == 6:  # prefill + 4 decode steps: the caller gives up
            loop.call_soon_threadsafe(gone.cancel)
        return real(*args, **k)

    monkeypatch.setattr(model.model, "forward", forward)
    kept = asyncio.ensure_future(model.generate(PROMPTS[2], **kw))
    [c] = await kept
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert rows_seen[1] == 4 and rows_seen[-1] == 1, rows_seen  # 3 + 1 rows, then the kept one alone
    assert c.usage.completion_tokens == 40 or c.finish_reason == "stop"


async def test_per_row_temperature_and_top_p_are_applied(model):
    [greedy] = await model.generate(PROMPTS[1], temperature=0.0, max_tokens=20)
    cold, nucleus, hot = await together(model, [
        (PROMPTS[1], {"temperature": 1e-4, "max_tokens": 20, "seed": 1}),  # ~ argmax
        (PROMPTS[1], {"temperature": 1.0, "top_p": 1e-6, "max_tokens": 20, "seed": 2}),  # only the top token
        (PROMPTS[1], {"temperature": 1.0, "max_tokens": 20, "seed": 3}),
    ])
    assert cold[0].text == nucleus[0].text == greedy.text
    assert hot[0].text != greedy.text


async def test_each_row_stops_at_its_own_limit_and_is_answered_while_longer_rows_go_on(model, calls, monkeypatch):
    """Requests of very different prompt lengths, max_tokens and stop strings in one batch: each row ends at
    its own stop string / max_tokens, and its answer is delivered then, not when the batch's longest row ends."""
    import re

    long_prompt = [{"role": "user", "content": " ".join(p[-1]["content"] for p in PROMPTS) * 3}]
    [free] = await model.generate(PROMPTS[3], temperature=0.0, max_tokens=40)
    stop = next(w.group() for w in re.finditer(r"[A-Za-z]{3,}", free.text) if free.text.find(w.group()) > 0)
    calls.clear()
    rows_seen: list[int] = []
    real = model.model.forward

    def forward(*args, **kw):
        rows_seen.append(kw["input_ids"].shape[0])
        return real(*args, **kw)

    monkeypatch.setattr(model.model, "forward", forward)
    done: list[str] = []
    tasks = {}
    for name, msgs, kw in [("long", long_prompt, {"max_tokens": 64}),
                           ("short", PROMPTS[0], {"max_tokens": 3}),
                           ("stopped", PROMPTS[3], {"max_tokens": 64, "stop": [stop]}),
                           ("sampled", PROMPTS[1], {"n": 2, "temperature": 1.0, "max_tokens": 5, "seed": 1})]:
        tasks[name] = asyncio.ensure_future(model.generate(msgs, temperature=kw.pop("temperature", 0.0), **kw))
        tasks[name].add_done_callback(lambda _, name=name: done.append(name))
    out = {k: await t for k, t in tasks.items()}
    assert calls == [1 + 1 + 1 + 2], "one batch"
    [long], [short], [stopped], sampled = out["long"], out["short"], out["stopped"], out["sampled"]
    assert long.usage.completion_tokens == 64 and long.finish_reason == "length"
    assert short.usage.completion_tokens == 3 and short.finish_reason == "length"
    assert stopped.text == free.text[: free.text.find(stop)] and stopped.finish_reason == "stop"
    assert all(c.usage.completion_tokens == 5 for c in sampled)
    assert done[-1] == "long" and set(done[:-1]) == {"short", "stopped", "sampled"}
    # rows leave the batch as they end: the last steps run the long row alone
    steps = rows_seen[1:]
    assert steps == sorted(steps, reverse=True) and steps[0] == 5 and steps[-1] == 1
    assert len(steps) == 63, "64 tokens: the prefill's, then 63 steps"
    assert steps[:2] == [5, 5] and steps[4] <= 2, "short (3 tokens) and sampled (5) left after steps 2 and 4"
    assert steps.count(1) >= 63 - stopped.usage.completion_tokens
    assert len(model.encode_prompt(long_prompt, None)["input_ids"][0]) > 4 * short.usage.prompt_tokens


@pytest.mark.parametrize("threads", [1, 0])
async def test_batches_run_on_the_configured_threads_and_restore_torchs_count(tiny_qwen_varied, threads):
    """With torch's own thread count, batches ran 3-9x slower on a shared 2-vCPU VM (agentkd serve + collect
    at concurrency 4 went from under 2 to over 7 minutes): the worker runs prefill and decoding on `threads`
    (0: torch's count) and gives the process its count back after each batch."""
    import torch

    m = TransformersModel(tiny_qwen_varied, dtype="float32", batch=LocalBatchConfig(threads=threads))
    seen: list[tuple[int, int]] = []
    real = m.model.forward

    def forward(*args, **kw):
        seen.append((kw["input_ids"].shape[1], torch.get_num_threads()))
        return real(*args, **kw)

    m.model.forward = forward
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = await together(m, [(p, {"temperature": 0.0, "max_tokens": 6}) for p in PROMPTS])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert all(c.usage.completion_tokens > 0 for [c] in out)
    prefill = [t for width, t in seen if width > 1]
    decode = [t for width, t in seen if width == 1]
    assert prefill and len(decode) >= 5 and set(prefill + decode) == {threads or 2}


def test_the_worker_ends_before_the_interpreter_does(tmp_path):
    """A request is answered from inside its batch's `generate`; a script that exits right after that answer,
    while its batch still decodes another row, must not kill the worker thread inside torch (with the
    embedded SmolLM2 that was std::terminate: "terminate called without an active exception", status 134)."""
    import subprocess
    import sys

    script = tmp_path / "exit_early.py"
    script.write_text(
        "import asyncio\n"
        "from agentkd.models.load import load_model\n"
        "m = load_model('embedded:smollm2-135m', progress=False)\n"
        "async def main():\n"
        "    short = m.generate([{'role': 'user', 'content': 'The capital of France?'}], temperature=0.0, max_tokens=1)\n"
        "    longer = m.generate([{'role': 'user', 'content': 'Write a long story.'}], temperature=0.0, max_tokens=64)\n"
        "    task = asyncio.ensure_future(longer)\n"
        "    [c] = await short\n"
        "    print('answered', c.usage.completion_tokens, task.done(), flush=True)\n"
        "asyncio.run(main())\n")
    import os
    from pathlib import Path

    import agentkd

    env = {**os.environ, "PYTHONPATH": str(Path(agentkd.__file__).parents[1])}  # this checkout's agentkd
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "answered 1 False" in r.stdout and "terminate called" not in r.stderr


def test_top_p_prefilter_draws_what_the_full_sort_draws():
    """The sampler's top-k prefilter (rows whose 256 most likely tokens reach top_p) against top-p over the
    whole sorted vocabulary, with the same draws: peaked rows take the prefilter, flat ones the full sort."""
    import torch

    from agentkd.models.batching import Request, Row, sample

    vocab, gen = 49152, torch.Generator().manual_seed(0)
    scale = torch.tensor([[8.0], [0.1], [5.0], [1.0], [8.0], [0.01]])
    scores = torch.randn(len(scale), vocab, generator=gen) * scale
    top_ps, temps = [0.9, 0.95, 0.8, 1.0, 0.5, 0.3], [0.7, 1.0, 0.4, 1.0, 1.5, 1.0]
    for step in range(20):
        rows = [Row(Request(encode=list, n=1, temperature=t, top_p=p, max_tokens=9, stop=None, seed=None,
                            deliver=print), 0, torch.Generator().manual_seed(step * 10 + i))
                for i, (t, p) in enumerate(zip(temps, top_ps, strict=True))]
        got = sample(rows, scores).tolist()
        want = []
        for i, (t, p) in enumerate(zip(temps, top_ps, strict=True)):
            probs = torch.softmax(scores[i] / t, -1)
            sp, si = probs.sort(descending=True)
            sp = sp * ((sp.cumsum(-1) - sp) < p)
            cdf = sp.cumsum(-1)
            u = float(torch.rand((), generator=torch.Generator().manual_seed(step * 10 + i)))
            want.append(int(si[min(int(torch.searchsorted(cdf, u * cdf[-1], right=True)), vocab - 1)]))
        assert got == want
        assert all(len(r.logprobs) == 1 and r.logprobs[0] <= 0 for r in rows)
    mass = torch.softmax(scores / torch.tensor(temps)[:, None], -1).topk(256).values.sum(-1)
    took_prefilter = (mass >= torch.tensor(top_ps)).tolist()
    assert any(took_prefilter) and not all(took_prefilter)
