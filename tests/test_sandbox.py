"""Sandbox: behaviour and attack tests against real backends (bubblewrap, unshare, and a real Docker daemon).

The Docker backend's tests use the daemon named by $AGENTKD_DOCKER_HOST (tools/ci/test.sh starts one via
tools/ci/services.d/docker.sh; run `bash tools/ci/services.d/docker.sh start` to use it directly), else the
private daemon's default socket, else skip with the reason.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import procs_with, wait_until

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


def backend_options(name: str) -> dict:
    """The subprocess backend as root needs an interpreter the sandbox uid can read (the host's may sit in a
    private folder such as /root/.pyenv): the system one."""
    return {"python": "/usr/bin/python3"} if name == "subprocess" and os.path.exists("/usr/bin/python3") else {}


def make(backend: str, **kw) -> Sandbox:
    tools = kw.pop("tools", None)
    kw.setdefault("timeout_s", 5)
    return Sandbox(SandboxConfig(backend=backend, **backend_options(backend), **kw), tools=tools)


@pytest.fixture(scope="module", params=["bwrap", "unshare", "forkserver", "docker", "subprocess"])
def any_backend(request) -> str:
    """Every backend, the non-isolating subprocess one included (for the limits every backend applies)."""
    name = request.param
    reason = (backend_class(name).unavailable(SandboxConfig(backend=name, **backend_options(name)))
              if name == "subprocess" else _unavailable(name))
    if reason:
        pytest.skip(f"{name} backend unavailable: {reason}")
    return name


SANDBOX_UID = 65534 if os.geteuid() == 0 else os.getuid()  # SandboxConfig.uid as root; else the user itself


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


def test_candidates_get_their_own_copy_of_the_work_dir(backend):
    with make(backend) as sb:
        sb.run("import os\nos.makedirs('d', exist_ok=True)\nopen('d/keep.txt', 'w').write('k')")
        rs = sb.run_candidates(["open('lose.txt', 'w').write('l')\nopen('d/keep.txt', 'w').write('changed')",
                                "open('win.txt', 'w').write('w')\nsorted(os.listdir('.'))"])
        assert rs[1].value == "['d', 'win.txt']"  # a sibling's file is not visible while they run
        sb.commit(rs[1])
        assert sb.run("sorted(os.listdir('.')), open('d/keep.txt').read()").value == "(['d', 'win.txt'], 'k')"
        sb.run_candidates(["open('gone.txt', 'w').write('g')"])  # nothing committed
        assert sb.run("sorted(os.listdir('.'))").value == "['d', 'win.txt']"


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
    # measured by the worker inside the sandbox (agentkd.sandbox.isolation), not declared by the backend
    with make(backend, work_dir_mb=32, memory_mb=384) as sb:
        rep = sb.isolation_report()
        assert sb.isolation() == {k: v["ok"] for k, v in rep.items()}
        for k in ("network", "filesystem", "pid", "uid", "seccomp", "memory", "work_dir"):
            assert rep[k]["ok"] is True, (k, rep[k])
        net, fs, pid = rep["network"], rep["filesystem"], rep["pid"]
        assert net["shared_namespace"] is False and net["interfaces"] == ["lo"] and net["host_listener"] != "reached"
        assert fs["root_is_host_root"] is False and fs["host_path_visible"] is False
        assert Path(fs["host_path"]).is_dir()  # the host path the probe looked for does exist on the host
        assert pid["shared_namespace"] is False and pid["host_process_visible"] is False
        assert rep["uid"]["uid"] == rep["uid"]["peer_uid"] == SANDBOX_UID and rep["uid"]["cap_eff"] == "0" * 16
        assert rep["memory"]["rlimits"]["RLIMIT_CPU"] == 600 and rep["memory"]["rlimit_as"] is not None
        assert rep["work_dir"]["size_bytes"] <= 33 << 20
        # the host found the kernel's process under a cgroup limited to memory_mb, where one could be made
        has_cgroup = backend == "docker" or getattr(sb._impl, "cgroup", None) is not None
        assert rep["memory_cgroup"]["ok"] is has_cgroup and rep["procs_cgroup"]["ok"] is has_cgroup, rep
        if has_cgroup:
            assert rep["memory_cgroup"]["limit"] == 384 << 20 and rep["procs_cgroup"]["limit"] == 64
        # what the code itself sees agrees: a handful of processes, no host interfaces
        r = sb.run("import os\n(len([p for p in os.listdir('/proc') if p.isdigit()]), "
                   "sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))")
        n, ifaces = eval(r.value)
        assert n <= 4 and ifaces == ["lo"], r


# -- limits every backend applies (config.cpu_time_s, max_file_mb, work_dir_mb, uid) ---------------------------

def test_cpu_time_limit_kills_a_busy_process(any_backend):
    # RLIMIT_CPU soft = hard: Linux sends SIGKILL (SIGXCPU when soft < hard) once the process used 1 CPU second
    code = ("import os, resource, signal\npid = os.fork()\nif pid == 0:\n    while True:\n        pass\n"
            "_, st, ru = os.wait4(pid, 0)\n(os.WIFSIGNALED(st) and signal.Signals(os.WTERMSIG(st)).name, "
            "ru.ru_utime + ru.ru_stime, resource.getrlimit(resource.RLIMIT_CPU))")
    with make(any_backend, cpu_time_s=1, timeout_s=20) as sb:
        r = sb.run(code)  # the soft time limit is far away: only RLIMIT_CPU can end the loop
        assert r.error is None, r
        sig, cpu, limit = eval(r.value)
        assert sig in ("SIGKILL", "SIGXCPU") and 0.8 <= cpu < 3.0 and limit == (1, 1), r  # (rusage is tick-sampled)
        assert sb.run("1 + 1").value == "2"


def test_file_size_limit(any_backend):
    code = ("import errno, os\nfd = os.open('big', os.O_WRONLY | os.O_CREAT)\nn = os.write(fd, b'x' * (1 << 20))\n"
            "try:\n    os.write(fd, b'y')\n    err = None\nexcept OSError as e:\n    err = errno.errorcode[e.errno]\n"
            "os.close(fd)\n(n, err, os.path.getsize('big'))")
    with make(any_backend, max_file_mb=1) as sb:
        r = sb.run(code)
        assert r.error is None and eval(r.value) == (1 << 20, "EFBIG", 1 << 20), r  # SIGXFSZ does not kill it
        assert sb.run("open('small', 'w').write('ok')").value == "2"


FILL_WORKDIR = ("import errno, os\nwritten, err = 0, None\nfor i in range(24):\n"
                "    try:\n        with open(f'chunk{i}', 'wb') as f:\n            f.write(b'z' * (1 << 20))\n"
                "        written += 1 << 20\n    except OSError as e:\n        err = errno.errorcode[e.errno]\n"
                "        break\n(written, err)")


def test_work_dir_size_limit(any_backend):
    with make(any_backend, work_dir_mb=8, max_file_mb=64) as sb:
        r = sb.run(FILL_WORKDIR)
        written, err = eval(r.value)
        if any_backend == "subprocess":  # its work dir is a host temp folder: it says the limit is not enforced
            assert (written, err) == (24 << 20, None), r
            assert sb.isolation()["work_dir"] is False and "not enforced" in sb.isolation_report()["work_dir"]["why"]
            return
        assert err == "ENOSPC" and 6 << 20 <= written <= 8 << 20, r
        assert sb.isolation()["work_dir"] is True
        r = sb.run("import glob, os\nfor p in glob.glob('chunk*'):\n    os.remove(p)\nopen('after', 'wb').write(b'a' * (4 << 20))")
        assert r.error is None and r.value == str(4 << 20), r  # the space comes back


def test_code_runs_as_the_sandbox_uid(any_backend):
    marker = f"agentkd-uid-{uuid.uuid4().hex}"
    with make(any_backend, allowed_imports=None) as sb:
        r = sb.run("import os\n(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups(), "
                   "open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
        assert r.error is None, r
        uid, euid, gid, egid, groups, caps = eval(r.value)
        assert uid == euid == SANDBOX_UID and caps == "0" * 16, r
        if os.geteuid() == 0:
            assert gid == egid == 65534 and set(groups) <= {65534}, r  # (Docker lists the primary group too)
        # the host sees the same uid on a process the code started
        r = sb.run(f"import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', "
                   f"{marker!r}])\n1")
        assert r.error is None, r
        assert wait_until(lambda: len(procs_with(marker)) == 1)
        status = Path(f"/proc/{procs_with(marker)[0]}/status").read_text()
        host_uids = next(ln.split()[1:] for ln in status.splitlines() if ln.startswith("Uid:"))
        assert host_uids == [str(SANDBOX_UID)] * 4, status


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

class HostWitness:
    """What the attacks must leave alone on the host: this test process (no signal reaches it), two sibling
    processes it started (one as root, one with the sandbox's own uid: the one `kill(-1)` from a sandbox that
    shares the host's pid namespace would reach), and a canary file anyone may write, outside every sandbox."""

    CAUGHT = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.got: list[int] = []
        self.old = {sig: signal.signal(sig, lambda sig, _f: self.got.append(sig)) for sig in self.CAUGHT}
        as_sandbox_uid = {"user": SANDBOX_UID, "group": SANDBOX_UID} if os.geteuid() == 0 else {}
        self.siblings = [subprocess.Popen(["sleep", "3600"]), subprocess.Popen(["sleep", "3600"], **as_sandbox_uid)]
        self.dir = Path(f"/tmp/agentkd-witness-{uuid.uuid4().hex[:8]}")
        self.dir.mkdir()
        self.dir.chmod(0o777)
        self.canary = self.dir / "canary.txt"
        self.canary.write_text(f"CANARY-{uuid.uuid4().hex}")
        self.canary.chmod(0o666)
        self.before = self.state()

    def state(self) -> tuple:
        st = self.canary.stat()
        return hashlib.sha256(self.canary.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size, sorted(os.listdir(self.dir))

    def check(self) -> None:
        assert self.got == [], f"the test process received signals {self.got}"
        for p in self.siblings:
            assert p.poll() is None, f"host process {p.args} (pid {p.pid}) was killed: {p.returncode}"
        assert self.state() == self.before, "the canary outside the sandbox changed"

    def close(self) -> None:
        for p in self.siblings:
            p.kill()
            p.wait()
        for sig, old in self.old.items():
            signal.signal(sig, old)
        for p in self.dir.iterdir():
            p.unlink()
        self.dir.rmdir()


@pytest.fixture(scope="module")
def witness():
    w = HostWitness()
    yield w
    w.close()


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


def test_attack_write_outside_workdir(backend, witness):
    with make(backend) as sb:
        r = sb.run("open('notes.txt', 'w').write('ok')\nprint(open('notes.txt').read())")
        assert r.stdout == "ok\n"
        for target in (str(witness.dir / "pwned"), "/usr/pwned", "/etc/pwned", str(REPO / "pwned")):
            r = sb.run(f"open({target!r}, 'w').write('x')")
            assert r.error and not Path(target).exists(), (target, r)
        r = sb.run(f"open({str(witness.canary)!r}, 'w').write('pwned')")  # world-writable on the host
        assert r.error and ("FileNotFoundError" in r.error or "PermissionError" in r.error), r
    witness.check()


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


SIGNAL_ATTACK = """
import os, signal
out = {}
for name, pid, sig in TARGETS:
    try:
        os.kill(pid, sig)
        out[name] = 'sent'
    except OSError as e:
        out[name] = type(e).__name__
out
"""


def test_attack_signal_host_processes(backend, witness):
    targets = [("host", os.getpid(), int(signal.SIGUSR1)), ("host-term", os.getpid(), int(signal.SIGTERM)),
               *((f"sibling{i}", p.pid, int(signal.SIGKILL)) for i, p in enumerate(witness.siblings))]
    with make(backend) as sb:
        r = sb.run(f"TARGETS = {targets!r}\n{SIGNAL_ATTACK}")
        assert r.error is None, r
        out = eval(r.value)
        # no host pid is visible: each signal is refused (or, by pid number, lands on nothing of the host)
        assert all(v in ("ProcessLookupError", "PermissionError") for v in out.values()), out
        # its parent is the sandbox's init (pid 1 of its own namespace), which ignores the SIGKILL; kill(-1) finds
        # nothing else it may signal
        r = sb.run("import os, signal\nout = {'ppid': os.getppid()}\nfor name, pid in (('parent', os.getppid()), "
                   "('all', -1)):\n    try:\n        os.kill(pid, signal.SIGKILL)\n        out[name] = 'sent'\n"
                   "    except OSError as e:\n        out[name] = type(e).__name__\nout")
        assert r.error is None and not r.restarted, r
        out = eval(r.value)
        assert out["ppid"] == 1 and out["parent"] == "sent" and out["all"] in ("ProcessLookupError", "sent"), out
        r = sb.run("1 + 1")
        assert r.value == "2" and not r.restarted  # the same worker answers again
    # ... and nothing on the host was touched: this process, its siblings (one with the sandbox's uid), the canary
    assert wait_until(lambda: any(p.poll() is not None for p in witness.siblings), timeout=0.5) is False
    witness.check()


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
    # (how long a flood takes is measured by tools/bench/sandbox.py; the soft limit bounds it here)
    with make(backend, max_output_bytes=10000, timeout_s=60) as sb:
        r = sb.run("print('x' * 100_000_000)")
        assert r.truncated and len(r.stdout) < 11000 and "output truncated" in r.stdout and not r.timed_out
        r = sb.run("import os\nos.write(1, b'y' * 100_000_000)\nprint('done')")
        assert r.truncated and len(r.stdout) < 11000 and r.stdout.startswith("y" * 100) and not r.timed_out
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


def test_host_stays_healthy_after_attacks(backend, witness):
    # after every attack above on this backend: no signal reached this process, its sibling processes live, the
    # canary is unchanged, the repository holds nothing the sandbox wrote, and a new sandbox starts and works
    witness.check()
    assert not list(REPO.glob("pwned*")) and not Path("/usr/pwned").exists() and not Path("/etc/pwned").exists()
    with make(backend) as sb:
        assert sb.run("sum(range(10))").value == "45"


def test_auto_falls_back_to_forkserver_or_bwrap_without_docker(monkeypatch):
    no_docker = SandboxConfig(docker_host="unix:///nonexistent/docker.sock")
    if os.geteuid() == 0 and not _unavailable("forkserver"):
        assert Sandbox(no_docker).backend == "forkserver"
    if _unavailable("bwrap"):
        pytest.skip(f"bwrap backend unavailable: {_unavailable('bwrap')}")
    # a normal user never gets the fork server: it says why, and auto takes bwrap
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert backend_class("forkserver").unavailable(no_docker) == "needs root (as a normal user, use bwrap)"
    assert Sandbox(no_docker).backend == "bwrap"


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal concerns agentkd running as root")
def test_worker_refuses_to_run_code_as_root():
    from agentkd.sandbox import worker

    with pytest.raises(SystemExit, match="refuses to run user code as root"):
        worker._drop_privileges({"uid": None})


def test_subprocess_backend_reports_that_it_does_not_isolate():
    why = backend_class("subprocess").unavailable(SandboxConfig(backend="subprocess", **backend_options("subprocess")))
    if why:
        pytest.skip(f"subprocess backend unavailable: {why}")
    with make("subprocess", allowed_imports=None, work_dir_mb=32) as sb:
        rep = sb.isolation_report()
        # the probe finds the host through every wall this backend does not build
        for k in ("network", "filesystem", "pid", "seccomp", "work_dir"):
            assert rep[k]["ok"] is False, (k, rep[k])
        assert rep["network"]["shared_namespace"] is True and rep["network"]["host_listener"] == "reached"
        assert rep["filesystem"]["root_is_host_root"] is True and rep["filesystem"]["host_path_visible"] is True
        assert rep["pid"]["host_process_visible"] is True
        assert "not enforced" in rep["work_dir"]["why"]
        # what it does apply: a non-root uid and rlimits
        assert rep["uid"]["ok"] is True and rep["uid"]["uid"] == SANDBOX_UID and rep["memory"]["ok"] is True
        r = sb.run("import os\nos.getuid()")
        assert r.error is None and r.value == str(SANDBOX_UID)


def test_cli_check_prints_backend_and_isolations():
    from typer.testing import CliRunner

    from agentkd.cli import app

    r = CliRunner().invoke(app, ["sandbox", "check", "--backend", "bwrap"])
    assert r.exit_code == 0, r.output
    assert "backend: bwrap" in r.output and "code runs as uid" in r.output
    for k in ("network", "filesystem", "pid", "memory", "uid", "seccomp"):
        assert any(line.split()[:2] == [k, "yes"] for line in r.output.splitlines()), (k, r.output)
