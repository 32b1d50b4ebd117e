"""Secure, persistent execution of model-written Python, with host tools and forkable state.

    from agentkd.sandbox import Sandbox, SandboxConfig, ExecResult

    with Sandbox(SandboxConfig(backend="auto", timeout_s=10, memory_mb=1024), tools={"web_search": fn}) as sb:
        r = sb.run("x = 2\\nprint(x + 1)")        # ExecResult: stdout, stderr, error, value, timed_out, ...
        r = sb.run("print(x * 10)")              # state persists within the episode
        r = sb.run("web_search('q')")            # host tools are plain functions inside the sandbox
        rs = sb.run_candidates([code_a, code_b]) # each on a copy of the current state, in parallel
        sb.commit(rs[1])                         # adopt one candidate's state (SAG); others are dropped
        sb.backend, sb.isolation(), sb.start_time_s

    pool = SandboxPool(SandboxConfig(), tools)  # the collection runner's way: ep = pool.acquire()
    with pool.acquire() as sb: ...           # a fresh episode with the same interface as Sandbox, in ~3 ms
    pool.close()

`Sandbox(config, tools)` (one new sandbox; `config.episode_isolation` only concerns `SandboxPool`)
    `run(code, timeout_s=None) -> ExecResult` never raises for problems in the code: errors, soft timeouts
    (SIGALRM-interrupt, state kept), hard timeouts and worker deaths (sandbox restarted, `restarted=True`,
    state lost) are reported in the result. `run_candidates(codes) -> list[ExecResult]` forks the worker
    once per code (copy-on-write) and runs them concurrently; `commit(result)` makes that candidate's
    process the main worker. `restart()`, `close()` (kills every process the sandbox started).
    Candidates that are not committed are dropped by the next call. Calls on one Sandbox are serialised;
    use one Sandbox per episode. The soft limit (`timeout_s`) counts host-tool time; the hard limit
    (`timeout_s + hard_timeout_grace_s`) does not. `start_time_s`: launch-to-ready time of the last worker.
    `await arun(code, timeout_s=None, executor=None)`: `run` for asyncio code; the exchange with the worker
    happens on the event loop (no thread per run), host tools, starts and restarts in `executor`; one
    `arun` at a time per sandbox. `launch()` starts the worker without waiting for it to connect (`start()`,
    or the first run, picks it up; `started` tells): one thread can launch many sandboxes that boot in
    parallel. `kill_now()` sends SIGKILL to every process of the sandbox without waiting (then `close()`).
    `isolation()` -> {wall: True/False/None} and `isolation_report()` (with why and what was measured): the
    walls kernel 0 found up inside the sandbox before any code ran (`agentkd.sandbox.isolation`): network,
    filesystem, pid, uid, seccomp, memory, work_dir, memory_cgroup, procs_cgroup. Nothing is declared by a
    backend: False means the probe saw the host through the wall, None that it could not tell.
`SandboxPool(config, tools)`
    `acquire()` returns a started, pristine per-episode sandbox with the `Sandbox` interface (run,
    run_candidates, commit, restart, close, backend, isolation(), context manager) and the same per-episode
    semantics: persistence, soft/hard timeouts with restart, host tools, final_answer, candidates/commit;
    `acquire(wait=False)` returns it launched (container mode). `close()` on the pool stops everything it
    started, episodes still open included; `close(wait=False)` kills every process at once and leaves the
    waiting and clean-up to a background thread (joined at exit). How episodes are separated is
    `config.episode_isolation`:
    process     each warm sandbox holds a template kernel that never runs code; an episode is
                forked from it (~3 ms of CPU instead of ~7 ms for a new forkserver sandbox, ~25 ms with
                bwrap): an episode root
                (own session, child subreaper) and the episode's kernel (own process group). Separate per
                episode: processes, Python state (variables, imports, patched modules/builtins), work dir
                /work/eN (also HOME and TMPDIR), timeouts and restarts (a restart forks a fresh episode);
                `close()` kills every process the episode started, background and setsid children included
                (they stay below its root), and removes its work dir. Shared by the up to
                `episodes_per_container` episodes of one sandbox: the uid, mount and pid namespaces (/proc
                shows the others' processes), /tmp, and the cgroup memory/pids limits and work-dir tmpfs,
                which are multiplied by `episodes_per_container` (per-process rlimits - address space, CPU
                time, file size - are not). So one episode's code can reach another's on purpose: read or
                write its work dir, signal its pids (only `kill(-1)` is refused by an extra seccomp filter),
                use the shared memory/pids budget, or impersonate a pending kernel on the control socket.
                It is not a security wall between episodes; opt in when sandbox start-up CPU limits
                throughput (a fast local teacher at high concurrency) and the code is the same trusted
                teacher's on benign tasks, where a rare cross-episode accident costs one trajectory.
    container   (default) every episode is its own `Sandbox` (started ahead by a background thread; ~7 ms
                of CPU each with forkserver, the default as root, ~25 ms with bwrap): nothing is shared
                between episodes but the host.
    The host boundary is identical in both modes: same backend, namespaces, read-only system, no network,
    seccomp filter, non-root uid, rlimits and scrubbed environment. `isolation()` of a pooled episode is its
    template's probe, plus `episode_container: False`.
`ExecResult`
    stdout, stderr (fd-level capture, child processes included, truncated to `max_output_bytes` with a
    marker), error (exception type, message and the user-code traceback lines), value (repr of the last
    expression), timed_out, restarted, truncated, duration_s, is_final/final_answer, `.observation()`.
Inside the sandbox
    `final_answer(x)` stops the code (a BaseException, so `except Exception` cannot swallow it) and sets
    `is_final`. Each host tool is a function of the same name; arguments and results travel as JSON over
    the worker's Unix socket; a host exception is re-raised inside with the same type name and message.
    Calls from concurrent candidates are serialised by a lock on the host. Imports are limited by
    `allowed_imports` (default: stdlib, numpy, sympy).
Backends (`config.backend`; `auto` tries them in this order)
    docker      one container per episode: no network, memory/pids limits, read-only root, tmpfs work dir,
                all capabilities dropped, no-new-privileges, uid 65534. Needs a local daemon
                ($AGENTKD_DOCKER_HOST / $DOCKER_HOST) and the image (`agentkd sandbox build-image`).
    forkserver  (root only; the default without Docker when agentkd runs as root) the unshare backend's
                walls, started fast: one pre-started, pre-imported "zygote" worker per host process (sandbox
                environment only, never runs code, holds no secrets) forks each sandbox as pid 1 of a new
                pid namespace, which joins its cgroup, unshares mount/net/ipc/uts and runs the unshare
                worker's start sequence (same root, rlimits, uid drop, seccomp). No exec and no interpreter
                start: ~7 ms of CPU per sandbox (host included) instead of ~25. The host holds a pidfd of
                pid 1; killing it ends the namespace. The zygote dies with the host, and its sandboxes with it.
    bwrap       bubblewrap namespaces (mount, pid, net, ipc, uts), read-only system folders only, tmpfs
                /work, seccomp filter (x86_64), cgroup memory/pids limits, non-root uid. The default
                without Docker for a normal user.
    unshare     util-linux unshare namespaces; the worker builds the same read-only root itself (mount +
                pivot_root), then the same rlimits, uid drop and seccomp filter (loaded with prctl).
    subprocess  uid drop + rlimits only; warns loudly; refuses to run code as root unless `allow_unsafe`.
                Its work dir is a host temp folder: `work_dir_mb` is not enforced (isolation(): work_dir False).
Every backend runs the same stdlib-only worker (`agentkd/sandbox/worker.py`) with the same protocol.
All apply per-process rlimits (address space, CPU seconds, file size, open files, no core dumps; process
count when no pids cgroup exists) and a scrubbed environment (no API keys or tokens). `agentkd sandbox
check` shows what is active here; `python tools/bench/sandbox.py` times every backend.
"""

from agentkd.sandbox.config import SandboxConfig
from agentkd.sandbox.pool import SandboxPool
from agentkd.sandbox.result import ExecResult
from agentkd.sandbox.sandbox import Sandbox, SandboxError, choose_backend

__all__ = ["ExecResult", "Sandbox", "SandboxConfig", "SandboxError", "SandboxPool", "choose_backend"]
