"""Collection throughput against a stand-in teacher with fixed latency.

    python tools/bench/collect.py [--episodes 64] [--latency 0.3] [--concurrency 64] [--steps 3]
                                  [--isolation container,process,none] [--repeat 5]

Each episode makes `steps` teacher calls (steps-1 code actions, then final_answer), each code action runs
in the episode's real sandbox. Ideal throughput = concurrency / latency calls per second; prints
achieved ÷ ideal (target ≥ 0.9) for each `sandbox.episode_isolation` mode (container: a new sandbox per
episode; process: episodes forked from a warm template, see agentkd.sandbox), and peak memory of this
process. `none` replaces the sandbox with a stub that answers at once: the ceiling that everything but
the sandbox (client, stand-in server, event loop) allows on this machine under its current load.

Achieved throughput = teacher calls / the time from calling `collect()` to its last stored trajectory;
the sandbox teardown after that (every sandbox still open is killed before `collect()` returns) is
printed separately, with the ratio that counts it too. Each mode is timed `--repeat` times in this one
invocation (one warm-up episode first); the median is the result, min and max show the machine's noise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="teacher calls per episode")
    ap.add_argument("--backend", default="auto", help="sandbox backend")
    ap.add_argument("--isolation", default="container,process,none",
                    help="comma-separated sandbox.episode_isolation modes to measure, in this order "
                    "(none: a stub sandbox, for the ceiling)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed runs per mode (each with a fresh output folder); the median is the result")
    ap.add_argument("--episodes-per-container", type=int, default=None,
                    help="process mode: sandbox.episodes_per_container (default: the config default)")
    a = ap.parse_args()
    results: dict[str, float] = {}
    try:
        for mode in a.isolation.split(","):
            results[mode.strip()] = run_one(a, mode.strip())
    finally:
        CPU.close()
    if "none" in results and len(results) > 1:  # how much of what this machine allows the sandbox leaves
        print("vs the stub ceiling of this run: " + ", ".join(
            f"{m} {r:.3f} / {results['none']:.3f} = {r / results['none']:.3f}" for m, r in results.items() if m != "none"))


class _CpuMeter:
    """CPU seconds of this process and everything it starts (sandboxes included), independent of what else
    runs on the machine: a cgroup-v1 cpuacct group when one can be created (root), else None."""

    ROOT = Path("/sys/fs/cgroup/cpuacct")

    def __init__(self) -> None:
        self.dir: Path | None = None
        for stale in self.ROOT.glob("agentkd-bench-*"):  # left by killed runs: removable only once empty
            try:
                stale.rmdir()
            except OSError:
                pass
        try:
            d = self.ROOT / f"agentkd-bench-{os.getpid()}"
            d.mkdir()
            (d / "cgroup.procs").write_text(str(os.getpid()))
            self.dir = d
        except OSError:
            pass

    def read(self) -> float | None:
        try:
            return int((self.dir / "cpuacct.usage").read_text()) / 1e9 if self.dir else None
        except OSError:
            return None

    def close(self) -> None:
        if self.dir is None:
            return
        try:
            # this process and what it started and is still running (the sandbox fork server) move back
            for pid in (self.dir / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (self.ROOT / "cgroup.procs").write_text(pid)
            for _ in range(50):
                try:
                    self.dir.rmdir()
                    return
                except OSError:
                    time.sleep(0.02)
        except OSError:
            pass


CPU = _CpuMeter()


class _StubSandbox:
    """Answers like the sandbox would for the stand-in's actions, without running anything."""

    backend = "none"

    def run(self, code: str, timeout_s: float | None = None):
        import re

        from agentkd.sandbox import ExecResult

        m = re.search(r"final_answer\((['\"])(.*?)\1\)", code)
        if m:
            return ExecResult(is_final=True, final_answer=m.group(2))
        return ExecResult(stdout="42\n")

    def start(self) -> None:
        pass

    async def arun(self, code: str, timeout_s: float | None = None, **kwargs):
        return self.run(code, timeout_s)

    def close(self) -> None:
        pass


class _StubPool:
    backend = "none"

    def __init__(self, *args, **kwargs):
        pass

    def acquire(self, wait: bool = True) -> _StubSandbox:
        return _StubSandbox()

    def acquire_ahead(self) -> _StubSandbox:
        return _StubSandbox()

    def release(self, sandbox: _StubSandbox, delay_s: float = 0.1) -> None:
        pass

    def close(self, wait: bool = True) -> None:
        pass


def run_one(a: argparse.Namespace, mode: str) -> float:
    """Time `mode` and print its results; returns its median ratio."""
    import agentkd.sandbox

    real_pool = agentkd.sandbox.SandboxPool
    if mode == "none":
        agentkd.sandbox.SandboxPool = _StubPool  # type: ignore[misc,assignment]
    try:
        return _run_one(a, mode)
    finally:
        agentkd.sandbox.SandboxPool = real_pool  # type: ignore[misc]


@contextlib.contextmanager
def standin_process(latency: float, actions: int):
    """The stand-in teacher in its own process, so its threads do not share this process's GIL."""
    code = ("import time; from agentkd.testing.standin import StandinServer; "
            f"s = StandinServer(latency_s={latency}, actions={actions}).start(); print(s.url, flush=True); "
            "time.sleep(10**6)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def _run_one(a: argparse.Namespace, mode: str) -> float:
    import statistics

    from agentkd.collect import CollectConfig, collect

    with tempfile.TemporaryDirectory() as tmp, standin_process(a.latency, a.steps - 1) as url:
        tasks = Path(tmp) / "tasks.json"
        tasks.write_text(json.dumps({"examples": [{"id": i, "question": f"Bench question {i}?", "answer": "x"}
                                                  for i in range(a.episodes)]}))
        cfg = CollectConfig.model_validate({
            "tasks": {"path": str(tasks)},
            "teacher": {"model": "openai/standin", "api_base": url},
            "client": {"max_concurrency": a.concurrency},
            "agent": {"prompt": "codeact_student", "max_steps": a.steps},
            "tools": {"search": None},
            "sandbox": {"backend": a.backend, "episode_isolation": "process" if mode == "none" else mode,
                        **({"episodes_per_container": a.episodes_per_container} if a.episodes_per_container else {})},
            "concurrency": a.concurrency,
        })
        # warm-up: one episode pays the one-time imports (litellm, sandbox) outside the timed runs
        collect(cfg.model_copy(update={"tasks": cfg.tasks.model_copy(update={"limit": 1})}), Path(tmp) / "warm",
                progress=False)
        runs = []
        for r in range(a.repeat):  # each run a fresh output folder: every teacher call is new, none cached
            cpu0, t0 = CPU.read(), time.perf_counter()
            summary = collect(cfg, Path(tmp) / f"run{r}", progress=False)
            wall, cpu1 = time.perf_counter() - t0, CPU.read()
            ok = summary.statuses.get("ok", 0)
            if ok != a.episodes:
                print(f"[{mode}] INVALID: only {ok} of {a.episodes} episodes finished ok", file=sys.stderr)
                sys.exit(1)
            # collect() returns once every sandbox has been killed; that teardown (SIGKILL to every process
            # of every sandbox still open: ~20-40 ms for 64 here) is not collection work: the throughput
            # window ends when the last trajectory is stored. The ratio counting it is printed too.
            teardown = max(0.0, summary.wall_s - summary.episodes_s)
            calls = summary.request_cache.get("misses", 0)  # every teacher call of the run (all new)
            runs.append({"wall": wall, "teardown": teardown, "calls": calls,
                         "cpu": None if cpu0 is None or cpu1 is None else cpu1 - cpu0})
            time.sleep(0.5)  # let the last run's sandboxes finish leaving before the next one starts
    if mode == "none":
        backend = "stub"
    else:
        from agentkd.sandbox import SandboxConfig, choose_backend

        backend = choose_backend(SandboxConfig(backend=a.backend))[0].name
    ideal = a.concurrency / a.latency
    ratios = [r["calls"] / (r["wall"] - r["teardown"]) / ideal for r in runs]
    with_teardown = [r["calls"] / r["wall"] / ideal for r in runs]
    med = statistics.median(ratios)
    mid = runs[ratios.index(sorted(ratios)[len(ratios) // 2])]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"episodes={a.episodes} steps={a.steps} calls={mid['calls']} latency={a.latency}s "
          f"concurrency={a.concurrency} sandbox={a.backend} ({backend}) episode_isolation={mode} runs={a.repeat}")
    print(f"median run: wall={mid['wall']:.3f}s from collect() to the last stored trajectory "
          f"{mid['wall'] - mid['teardown']:.3f}s, then sandbox teardown {mid['teardown'] * 1000:.0f} ms; "
          f"ideal={ideal:.1f} calls/s")
    print(f"[{mode}] throughput ratio (achieved / ideal) = {med:.3f}   target >= 0.9   "
          f"(median of {a.repeat} runs, min {min(ratios):.3f}, max {max(ratios):.3f}; counting the teardown too: "
          f"{statistics.median(with_teardown):.3f})")
    cpus = [r["cpu"] for r in runs if r["cpu"] is not None]
    if cpus:
        cpu = statistics.median(cpus)
        print(f"cpu (this process + its sandboxes) = {cpu:.2f}s, {cpu / a.episodes * 1000:.1f} ms per episode "
              f"(median); machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"peak RSS (this process) = {peak_mb:.0f} MiB")
    return med


if __name__ == "__main__":
    main()
