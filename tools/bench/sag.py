"""Cost of self-consistent action generation: one SAG step with N=8 against one step with N=1, same run.

    python tools/bench/sag.py [--n 8] [--repeat 3] [--max-tokens 96] [--device cpu]

Both steps use the embedded SmolLM2 (`embedded:smollm2-135m`, no request cache), the student prompt, a
quickstart task, temperature 0.4 / top_p 0.8 and a real sandbox; they alternate, with seeds 0, 1, ... for
each repeat. A step is: sampling (N=8: one batched `generate`) + parsing + running the code (N=8: each
candidate on its own fork, in parallel) + the vote and commit. Prints the median wall time of each and the
ratio N=8 / N=1 (target <= 2.0; a loop over the candidates costs about 8), with the tokens each generated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time


async def bench(args: argparse.Namespace) -> None:
    from agentkd.agent.config import AgentConfig, SagConfig
    from agentkd.agent.prompts import render
    from agentkd.agent.sag import sag_action
    from agentkd.core.suites import load_suite
    from agentkd.models.config import ModelConfig
    from agentkd.models.load import load_model
    from agentkd.sandbox import Sandbox, SandboxConfig
    from agentkd.tools import build_tools
    from agentkd.tools.base import render_tools
    from agentkd.tools.config import ToolsConfig

    t0 = time.perf_counter()
    model = load_model(ModelConfig(model="embedded:smollm2-135m", device=args.device), progress=False)
    load_s = time.perf_counter() - t0
    task = next(t for t in load_suite("quickstart-test").load() if t.domain == "math")
    tools = build_tools(ToolsConfig())  # final_answer only: the step under test, not retrieval
    values = {"tools": render_tools(list(tools.values())), "tool_names": list(tools), "domain": task.domain,
              "max_steps": 5, "question": task.question}
    messages = [{"role": "system", "content": render("codeact_student", "system", **values)},
                {"role": "user", "content": render("codeact_student", "user", **values)}]
    cfgs = {n: AgentConfig(prompt="codeact_student", sag=SagConfig(n=n)) for n in (1, args.n)}
    times: dict[int, list[float]] = {1: [], args.n: []}
    tokens: dict[int, list[int]] = {1: [], args.n: []}
    with Sandbox(SandboxConfig(timeout_s=5), tools=tools) as sb:
        sb.run("pass")
        for seed in range(args.repeat + 1):  # the first round warms up (not counted)
            for n in (1, args.n):
                cfg = cfgs[n]
                t0 = time.perf_counter()
                if n == 1:  # the loop's one action: generate, parse, run in the episode's state
                    from agentkd.agent.parse import parse_action

                    [comp] = await model.generate(messages, n=1, temperature=0.4, top_p=0.8, stop=cfg.stop,
                                                  seed=seed, max_tokens=args.max_tokens)
                    code = parse_action(comp.text).code
                    if code:
                        await sb.arun(code)
                    out = comp.usage.completion_tokens
                else:
                    pick = await sag_action(messages, model, sb, cfg, domain=task.domain, seed=seed,
                                            max_tokens=args.max_tokens)
                    out = pick.completion.usage.completion_tokens
                if seed:
                    times[n].append(time.perf_counter() - t0)
                    tokens[n].append(out)
    one, many = statistics.median(times[1]), statistics.median(times[args.n])
    print(f"embedded:smollm2-135m on {args.device} (loaded in {load_s:.1f} s), max_tokens {args.max_tokens}, "
          f"{args.repeat} repeats, load average {os.getloadavg()[0]:.2f}")
    print(f"  N=1: median {one:.2f} s/step  (tokens generated: {tokens[1]})")
    print(f"  N={args.n}: median {many:.2f} s/step  (tokens generated, all candidates: {tokens[args.n]})")
    print(f"  ratio N={args.n} / N=1 = {many / one:.2f}  (target <= 2.0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--device", default="cpu")
    asyncio.run(bench(ap.parse_args()))


if __name__ == "__main__":
    main()
