"""Sandbox: behaviour and attack tests against real backends (bubblewrap, unshare, and a real Docker daemon).

The Docker backend's tests use the daemon named by $AGENTKD_DOCKER_HOST (tools/ci/test.sh starts one via
tools/ci/services.d/docker.sh; run `bash tools/ci/services.d/docker.sh start` to use it directly), else the
private daemon's default socket, else skip with the reason.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import procs_with

from agentkd.sandbox import ExecResult, Sandbox, SandboxConfig, SandboxError
from agentkd.sandbox.backends import backend_class

REPO = Path(__file__).resolve().parents[1]
PRIVATE_DOCKERD = "unix:///tmp/agentkd-dockerd/docker.sock"


def _unavailable(name: str) -> str | None:
    no_env = not os.environ.get("AGENTKD_DOCKER_HOST") and not os.environ.get("DOCKER_HOST")
    if name == "docker" and no_env and os.path.exists(PRIVATE_DOCKERD[len("unix://"):]):
        os.environ["AGENTKD_DOCKER_HOST"] = PRIVATE_DOCKERD
    return backend_class(name).unavailable(SandboxConfig(backend=name))


@pytest.fixture(scope="module", params=["bwrap", "unshare", "forkserver", "docker"])
def backend(request) -> str:
    name = request.param
    reason = _unavailable(name)
    if reason:
        hint = " (start one with `bash tools/ci/services.d/docker.sh start`)" if name == "docker" else ""
        pytest.skip(f"{name} backend unavailable: {reason}{hint}")
    return name


def make(backend: str, **kw) -> Sandbox:
    tools = kw.pop("tools", None)
    kw.setdefault("timeout_s", 5)
    return Sandbox(SandboxConfig(backend=backend, **kw), tools=tools)


# -- behaviour ---------------------------------------------------------------------------------------------

def test_persistence_value_and_output(backend):
    with make(backend) as sb:
        assert sb.backend == backend
        r = sb.run("x = 2\nprint(x + 1)\ndef twice(v):\n    return 2 * v\nx * 7")
        assert (r.stdout, r.value, r.error, r.restarted) == ("3\n", "14", None, False)
        r = sb.run("import os\nos.write(1, b'raw\\n')\nprint(twice(x) * 10)\nNone")
        assert r.stdout == "raw\n40\n" and r.value is None
        r = sb.run("import sys, subprocess\nsubprocess.run([sys.executable, '-c', 'print(42)'])\n"
                   "print('err', file=sys.stderr)")
        assert r.stdout == "42\n" and r.stderr == "err\n" and r.error is None


def test_forked_child_of_user_code_does_not_answer(backend):
    with make(backend, tools={"echo": lambda v: v}) as sb:
        r = sb.run("import os\npid = os.fork()\nif pid == 0:\n    try:\n        echo(1)\n    except RuntimeError as e:\n"
                   "        print('child:', e)\nelse:\n    os.waitpid(pid, 0)\n    print('parent')")
        assert r.stdout.startswith("child: host tools can only be called") and r.stdout.endswith("parent\n")
        assert sb.run("echo(5)").value == "5" and sb.run("6").value == "6"


def test_errors_show_only_user_frames(backend):
    with make(backend) as sb:
        r = sb.run("def f(d):\n    return 1 / d\n\nf(0)")
        assert r.error.startswith("Traceback (most recent call last):")
        assert 'File "<cell 1>", line 4' in r.error and "return 1 / d" in r.error
        assert r.error.endswith("ZeroDivisionError: division by zero")
        assert "worker.py" not in r.error
        r = sb.run("x = (")
        assert "SyntaxError" in r.error and "Traceback" not in r.error
        assert "ZeroDivisionError" in sb.run("1/0").observation()


def test_imports_default_policy(backend):
    with make(backend) as sb:
        r = sb.run("import json, numpy as np, sympy\nprint(int(np.arange(4).sum()), sympy.sqrt(8))")
        assert r.error is None and r.stdout == "6 2*sqrt(2)\n"
        r = sb.run("import torch")
        assert "ImportError" in r.error and "not allowed" in r.error
    with make(backend, allowed_imports=["math"]) as sb:
        assert sb.run("import math").error is None
        assert "not allowed" in sb.run("import json").error


def test_final_answer_cannot_be_swallowed(backend):
    with make(backend) as sb:
        r = sb.run("try:\n    final_answer({'a': [1, 2]})\nexcept Exception:\n    print('swallowed')\nprint('after')")
        assert r.is_final and r.final_answer == {"a": [1, 2]} and r.stdout == "" and r.error is None
        r = sb.run("import numpy as np\nfinal_answer(np.arange(3))")
        assert r.is_final and r.final_answer == [0, 1, 2]


def test_tool_bridge_round_trip_and_host_exception(backend):
    calls = []

    class QuotaError(Exception):
        pass

    def lookup(query, n=1):
        calls.append((query, n))
        return {"query": query, "hits": [query.upper()] * n}

    def boom(kind):
        if kind == "key":
            raise KeyError("missing")
        raise QuotaError("quota exhausted for today")

    with make(backend, tools={"lookup": lookup, "boom": boom}) as sb:
        r = sb.run("r = lookup('abc', n=2)\nprint(r['hits'])")
        assert r.error is None and r.stdout == "['ABC', 'ABC']\n" and calls == [("abc", 2)]
        r = sb.run("try:\n    boom('quota')\nexcept Exception as e:\n    print(type(e).__name__, e)")
        assert r.stdout == "QuotaError quota exhausted for today\n"
        r = sb.run("try:\n    boom('key')\nexcept KeyError as e:\n    print('caught', e)")
        assert r.stdout == "caught 'missing'\n"
        r = sb.run("boom('quota')")
        assert r.error.endswith("QuotaError: quota exhausted for today") and 'File "<cell 4>"' in r.error
        r = sb.run("from concurrent.futures import ThreadPoolExecutor\n"
                   "with ThreadPoolExecutor(4) as pool:\n    out = list(pool.map(lambda q: lookup(q)['hits'][0], 'abcdefgh'))\n"
                   "''.join(out)")
        assert r.error is None and r.value == "'ABCDEFGH'"
        r = sb.run("lookup(object())")
        assert "TypeError" in r.error and "JSON" in r.error


def test_soft_timeout_keeps_state_hard_timeout_restarts(backend):
    with make(backend, timeout_s=1, hard_timeout_grace_s=1) as sb:
        sb.run("x = 5")
        t = time.monotonic()
        r = sb.run("while True:\n    pass")
        assert r.timed_out and not r.restarted and "soft time limit" in r.error
        assert time.monotonic() - t < 1.8
        assert sb.run("x").value == "5"
        t = time.monotonic()
        r = sb.run("while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass")
        assert r.timed_out and r.restarted and "restarted" in r.error
        assert 1.9 < time.monotonic() - t < 6
        assert "NameError" in sb.run("x").error  # state was lost, worker works again
        assert sb.run("1 + 1").value == "2"


def test_candidates_isolated_then_commit(backend):
    with make(backend) as sb:
        sb.run("x = 1\nitems = [1]")
        rs = sb.run_candidates(["x = 10\nitems.append(10)\nx", "x = 20\nitems.append(20)\nx", "1/0"])
        assert [r.value for r in rs[:2]] == ["10", "20"] and "ZeroDivisionError" in rs[2].error
        assert sb.run("(x, items)").value == "(1, [1])"  # main state unchanged
        with pytest.raises(SandboxError):
            sb.commit(rs[1])  # run() dropped the candidates
        rs = sb.run_candidates(["x = 10\nitems.append(10)", "x = 20\nitems.append(20)"])
        sb.commit(rs[1])
        assert sb.run("(x, items)").value == "(20, [1, 20])"
        with pytest.raises(SandboxError):
            sb.commit(rs[0])
        # candidates run in parallel and may call host tools concurrently
        t = time.monotonic()
        sb.tools["echo"] = lambda v: v
        rs = sb.run_candidates(["import time\ntime.sleep(1)\nx"] * 3)
        assert [r.value for r in rs] == ["20"] * 3
        assert time.monotonic() - t < 2.5


def test_candidate_tools_and_timeouts(backend):
    with make(backend, timeout_s=1, hard_timeout_grace_s=1, tools={"echo": lambda v: v}) as sb:
        sb.run("x = 3")
        rs = sb.run_candidates(["echo(x * 2)", "while True:\n    try:\n        while True:\n            pass\n"
                                "    except BaseException:\n        pass"])
        assert rs[0].value == "6" and rs[1].timed_out and not rs[1].restarted
        with pytest.raises(SandboxError):
            sb.commit(rs[1])
        sb.commit(rs[0])
        assert sb.run("x").value == "3"


def test_output_truncated_with_marker(backend):
    with make(backend, max_output_bytes=1000) as sb:
        r = sb.run("print('a' * 5000)")
        assert r.truncated and r.stdout.startswith("a" * 1000) and "output truncated" in r.stdout
        assert len(r.stdout) < 1200
        r = sb.run("print('short')")
        assert not r.truncated and r.stdout == "short\n"


def test_sandboxed_code_is_batch_scheduled(backend):
    # a sandbox woken by a run must not preempt the host's event loop that many episodes wait on
    with make(backend) as sb:
        assert sb.run("import os\nos.sched_getscheduler(0) == os.SCHED_BATCH").value == "True"


def test_isolation_report(backend):
    with make(backend) as sb:
        iso = sb.isolation()
        for k in ("network", "filesystem", "pid", "memory", "uid", "seccomp"):
            assert iso[k] is True, (k, iso)
        assert sb.start_time_s is not None and sb.start_time_s < 5


@pytest.fixture(scope="module", params=["bwrap", "unshare", "forkserver"])
def seccomp_backend(request) -> str:
    """Backends that load agentkd's own seccomp filter (Docker applies the daemon's profile)."""
    reason = _unavailable(request.param)
    if reason:
        pytest.skip(f"{request.param} backend unavailable: {reason}")
    return request.param


def test_seccomp_filter_on_local_backends(seccomp_backend):
    with make(seccomp_backend) as sb:
        r = sb.run("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)")
        assert r.error and "Address family not supported" in r.error
        r = sb.run("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                   "(libc.unshare(0x10000000), os.strerror(ctypes.get_errno()))")  # CLONE_NEWUSER
        assert r.value == "(-1, 'Operation not permitted')"
        assert sb.run("import socket\na, b = socket.socketpair()\na.send(b'ok')\nb.recv(2)").value == "b'ok'"


def test_observation_format():
    r = ExecResult(stdout="hello\n", error="Traceback...\nValueError: x", restarted=True)
    assert r.observation() == ("hello\nTraceback...\nValueError: x\n"
                               "[the sandbox was restarted: all variables and imports were lost]")
    assert ExecResult(value="3").observation() == "Out: 3"
    assert ExecResult().observation() == "[no output]"


def test_config_section_registered():
    from agentkd.core.config import section_class

    assert section_class("sandbox") is SandboxConfig
    with pytest.raises(ValueError):
        SandboxConfig(unknown=1)


# -- attacks -----------------------------------------------------------------------------------------------

def test_attack_read_host_files(backend, tmp_path):
    d = Path(f"/tmp/agentkd-test-{uuid.uuid4().hex[:8]}")
    d.mkdir(mode=0o755)
    try:
        secret = d / "world-readable.txt"
        secret.write_text("HOST-SECRET-CONTENT")
        secret.chmod(0o644)
        with make(backend) as sb:
            for path in ("/etc/shadow", str(secret), str(REPO / "pyproject.toml")):
                r = sb.run(f"print(open({path!r}).read()[:50])")
                assert r.error and ("FileNotFoundError" in r.error or "PermissionError" in r.error), (path, r)
                assert "HOST-SECRET" not in r.stdout and "root:" not in r.stdout
    finally:
        secret.unlink()
        d.rmdir()


def test_attack_write_outside_workdir(backend):
    d = Path(f"/tmp/agentkd-test-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    d.chmod(0o777)
    try:
        with make(backend) as sb:
            r = sb.run("open('notes.txt', 'w').write('ok')\nprint(open('notes.txt').read())")
            assert r.stdout == "ok\n"
            for target in (str(d / "pwned"), "/usr/pwned", "/etc/pwned", str(REPO / "pwned")):
                sb.run(f"open({target!r}, 'w').write('x')")
                assert not Path(target).exists(), target
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def test_attack_tcp_connect_to_host_listener(backend):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    accepted, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(srv.accept())
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    try:
        with make(backend) as sb:
            r = sb.run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')")
            assert r.error and "connected" not in r.stdout
            r = sb.run("import socket\nsocket.getaddrinfo('deb.debian.org', 80)")
            assert r.error
    finally:
        stop.set()
        th.join()
        srv.close()
    assert accepted == []


def test_attack_signal_parent(backend):
    got = []
    old = signal.signal(signal.SIGUSR1, lambda *a: got.append(a))
    try:
        with make(backend) as sb:
            r = sb.run(f"import os, signal\nos.kill({os.getpid()}, signal.SIGUSR1)")
            assert r.error and ("ProcessLookupError" in r.error or "PermissionError" in r.error)
            r = sb.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)")
            r = sb.run("1 + 1")  # whatever the code killed, the sandbox answers again
            assert r.value == "2"
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == []


def test_attack_fork_bomb_bounded(backend):
    code = ("import os, time\nn = 0\nfor i in range(400):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(20)\n        os._exit(0)\n"
            "    n += 1\nprint(n)")
    with make(backend, max_procs=32) as sb:
        r = sb.run(code)
        assert r.error is None and int(r.stdout) < 32
        assert sb.run("1 + 1").value == "2"


def test_attack_huge_allocation(backend):
    with make(backend, memory_mb=512) as sb:
        sb.run("x = 1")
        r = sb.run("big = b'x' * (10 * 1024 ** 3)")
        assert r.error and ("MemoryError" in r.error or r.restarted)
        assert sb.run("2 + 2").value == "4"


def test_attack_children_exceed_memory_together(backend):
    code = ("import os, time\npids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        blob = bytearray(150 * 1024 * 1024)\n        for j in range(0, len(blob), 4096):\n"
            "            blob[j] = 1\n        os.write(1, b'allocated\\n')\n        time.sleep(3)\n        os._exit(0)\n"
            "    pids.append(pid)\nkilled = 0\nfor pid in pids:\n    _, st = os.waitpid(pid, 0)\n"
            "    killed += os.WIFSIGNALED(st)\nprint('killed', killed)")
    with make(backend, memory_mb=320, timeout_s=20) as sb:
        r = sb.run(code)
        # 4 x 150 MB cannot coexist under a 320 MB cap: at least two children were OOM-killed (possibly after
        # they allocated), or the kernel process itself was, and the sandbox restarted.
        assert r.restarted or int(r.stdout.split("killed")[1]) >= 2, r
        assert sb.run("3 + 3").value == "6"


def test_attack_output_flood(backend):
    with make(backend, max_output_bytes=10000, timeout_s=30) as sb:
        t = time.monotonic()
        r = sb.run("print('x' * 100_000_000)")
        assert r.truncated and len(r.stdout) < 11000 and "output truncated" in r.stdout
        r = sb.run("import os\nos.write(1, b'y' * 100_000_000)\nprint('done')")
        assert r.truncated and len(r.stdout) < 11000 and r.stdout.startswith("y" * 100)
        assert time.monotonic() - t < 25
        assert sb.run("'alive'").value == "'alive'"


def test_attack_setsid_daemon_does_not_outlive_episode(backend):
    marker = f"agentkd-daemon-{uuid.uuid4().hex}"
    code = ("import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: "
            f"time.sleep(1)', {marker!r}], start_new_session=True, stdin=subprocess.DEVNULL,\n"
            "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "import os\nif os.fork() == 0:\n    os.setsid()\n    os.execv(sys.executable, [sys.executable, '-c', "
            f"'import time\\ntime.sleep(600)', {marker!r}])")
    sb = make(backend)
    with sb:
        r = sb.run(code)
        assert r.error is None, r
        deadline = time.monotonic() + 5
        while len(procs_with(marker)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(procs_with(marker)) == 2  # the daemons really run
    deadline = time.monotonic() + 5
    while procs_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs_with(marker) == []


def test_attack_api_key_not_visible(backend, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-agentkd-test-secret")
    monkeypatch.setenv("AGENTKD_TEST_API_KEY", "sk-agentkd-test-secret")
    with make(backend) as sb:
        r = sb.run("import os\nprint({k: v for k, v in os.environ.items()})\n"
                   "print([k for k in os.environ if k.endswith('_API_KEY')])\n"
                   "for p in os.listdir('/proc'):\n    try:\n        print(open(f'/proc/{p}/environ').read())\n"
                   "    except Exception:\n        pass")
        assert "sk-agentkd-test-secret" not in r.stdout
        assert "[]" in r.stdout
        assert sb.run("import os\n'AGENTKD_TOKEN' in os.environ").value == "False"


def test_host_stays_healthy_after_attacks(backend):
    # the host process and filesystem are untouched; a new sandbox starts and works
    assert os.getpid() > 0 and stat.S_ISDIR(os.stat(REPO).st_mode)
    with make(backend) as sb:
        assert sb.run("sum(range(10))").value == "45"


def test_auto_falls_back_to_forkserver_or_bwrap_without_docker():
    expected = "forkserver" if not _unavailable("forkserver") else "bwrap"
    if _unavailable(expected):
        pytest.skip(f"{expected} backend unavailable: {_unavailable(expected)}")
    assert os.geteuid() == 0 or expected == "bwrap"  # a normal user never gets the fork server
    assert Sandbox(SandboxConfig(docker_host="unix:///nonexistent/docker.sock")).backend == expected


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal concerns agentkd running as root")
def test_worker_refuses_to_run_code_as_root():
    from agentkd.sandbox import worker

    with pytest.raises(SystemExit, match="refuses to run user code as root"):
        worker._drop_privileges({"uid": None})


def test_subprocess_backend_runs_as_non_root():
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs a system interpreter at /usr/bin/python3 readable by the sandbox uid")
    with Sandbox(SandboxConfig(backend="subprocess", python="/usr/bin/python3", allowed_imports=None)) as sb:
        r = sb.run("import os\nos.getuid()")
        assert r.error is None and r.value != "0"
        assert sb.isolation()["network"] is False


def test_cli_check_prints_backend_and_isolations():
    from typer.testing import CliRunner

    from agentkd.cli import app

    r = CliRunner().invoke(app, ["sandbox", "check", "--backend", "bwrap"])
    assert r.exit_code == 0, r.output
    assert "backend: bwrap" in r.output and "code runs as uid" in r.output
    for k in ("network", "filesystem", "pid", "memory", "uid", "seccomp"):
        assert any(line.split()[:2] == [k, "yes"] for line in r.output.splitlines()), (k, r.output)
