"""Local model batching: generated tokens/s at concurrency C against concurrency 1, side by side in one run.

    python tools/bench/local_model.py [--model embedded:smollm2-135m] [--concurrency 8] [--tasks 8]

The prompts are the collection teacher's first CodeAct step (codeact_teacher prompt, search + final_answer
tools, a quickstart-train question each), sampled as in recipes/quickstart.yaml (temperature 0.7, top_p 0.95,
max_tokens 128, the agent's stop strings, a seed per request). The same requests run once one at a time and
once `--concurrency` at a time (asyncio.gather, so the model batches them); prints tokens/s of each, their
ratio, the batch sizes the model ran, torch's thread count and the peak RSS. `--greedy-check` also compares
greedy (temperature 0) text of the requests batched together with each run alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from importlib import resources


def teacher_requests(count: int) -> list[list[dict[str, str]]]:
    from agentkd.agent.config import AgentConfig
    from agentkd.agent.prompts import render
    from agentkd.tools.base import render_tools
    from agentkd.tools.final_answer import FinalAnswerTool
    from agentkd.tools.search import SearchTool

    tools = [SearchTool(retriever=object()), FinalAnswerTool()]
    cfg = AgentConfig()
    lines = resources.files("agentkd.suites").joinpath("quickstart/train.jsonl").read_text().splitlines()
    out = []
    for line in lines[:count]:
        task = json.loads(line)
        values = {"tools": render_tools(tools), "tool_names": [t.name for t in tools], "domain": task["domain"],
                  "max_steps": 2, "question": task["question"]}
        out.append([{"role": "system", "content": render(cfg.prompt, "system", **values)},
                    {"role": "user", "content": render(cfg.prompt, "user", **values)}])
    return out


async def timed(model, requests, concurrency: int, **kw) -> tuple[float, int, list]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i, msgs):
        async with sem:
            return await model.generate(msgs, seed=i, **kw)

    t0 = time.perf_counter()
    outs = await asyncio.gather(*(one(i, m) for i, m in enumerate(requests)))
    dt = time.perf_counter() - t0
    return dt, sum(c.usage.completion_tokens for o in outs for c in o), [o[0].text for o in outs]


async def main_async(args) -> None:
    import torch

    from agentkd.agent.config import AgentConfig
    from agentkd.models.config import LocalBatchConfig, ModelConfig
    from agentkd.models.load import load_model

    model = load_model(ModelConfig(model=args.model, batch=LocalBatchConfig(threads=args.batch_threads)),
                       progress=False)
    reqs = teacher_requests(args.tasks)
    kw = {"temperature": 0.7, "top_p": 0.95, "max_tokens": args.max_tokens, "stop": AgentConfig().stop}
    prompt_lens = [len(model.encode_prompt(m, None)["input_ids"][0]) for m in reqs]
    await model.generate(reqs[0], max_tokens=4)  # warm-up
    model.worker.batches.clear()
    print(f"{args.model}: {len(reqs)} requests, prompts {min(prompt_lens)}-{max(prompt_lens)} tokens, "
          f"torch threads {torch.get_num_threads()}, batch threads {args.batch_threads or 'torch'}, load average {os.getloadavg()[0]:.2f}", flush=True)
    t1, n1, _ = await timed(model, reqs, 1, **kw)
    single = list(model.worker.batches)
    print(f"  concurrency 1: {n1} tokens in {t1:.1f} s = {n1 / t1:.1f} tokens/s (batches {single})", flush=True)
    for stats in (model.worker.batches, model.worker.shared, model.worker.spread_ms):
        stats.clear()
    tc, nc, _ = await timed(model, reqs, args.concurrency, **kw)
    batched = list(model.worker.batches)
    spread = max(model.worker.spread_ms)
    r1, rc = n1 / t1, nc / tc
    print(f"  concurrency {args.concurrency}: {nc} tokens in {tc:.1f} s = {rc:.1f} tokens/s (batches {batched}, "
          f"requests of a batch arrived within {spread:.2f} ms, shared prefix {model.worker.shared} tokens)")
    print(f"  tokens/s concurrency {args.concurrency} / concurrency 1 = {rc / r1:.2f}x")
    if args.greedy_check:
        g = {**kw, "temperature": 0.0}
        _, _, alone = await timed(model, reqs, 1, **g)
        _, _, together = await timed(model, reqs, args.concurrency, **g)
        same = sum(a == b for a, b in zip(alone, together, strict=True))
        print(f"  greedy: {same}/{len(reqs)} batched texts equal the text run alone")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:smollm2-135m")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=8, help="Requests (one quickstart-train question each).")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--greedy-check", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own).")
    ap.add_argument("--batch-threads", type=int, default=1,
                    help="LocalBatchConfig.threads: torch threads while a batch runs (0: torch's count).")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
