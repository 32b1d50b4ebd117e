"""SandboxPool: fresh per-episode sandboxes forked from a warm template (process mode) or started ahead
(container mode), against the real bubblewrap backend. Episodes must never see each other's state, must
take all their processes with them on close, and must keep every host-boundary protection of `Sandbox`."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import procs_with, wait_until

from agentkd.sandbox import Sandbox, SandboxConfig, SandboxPool
from agentkd.sandbox.backends import backend_class
from agentkd.sandbox.pool import PooledSandbox

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(backend_class("bwrap").unavailable(SandboxConfig(backend="bwrap")) is not None,
                                reason="bubblewrap is unavailable here")


def lookup(key: str) -> dict:
    return {"key": key, "len": len(key)}


def refuse(x: int) -> int:
    raise KeyError(f"no entry {x}")


@pytest.fixture(scope="module")
def pool():
    cfg = SandboxConfig(backend="bwrap", episode_isolation="process", timeout_s=5, hard_timeout_grace_s=0.5,
                        episodes_per_container=8)
    with SandboxPool(cfg, tools={"lookup": lookup, "refuse": refuse}) as p:
        yield p



# -- per-episode state ---------------------------------------------------------------------------------------

def test_fresh_episode_never_sees_another_episodes_state(pool):
    a = pool.acquire()
    assert isinstance(a, PooledSandbox)
    r = a.run("import builtins, string, os, tempfile\nsecret = 'A-SECRET'\nbuiltins.leaked = 1\nstring.capwords = None\n"
              "open('notes.txt', 'w').write('A-FILE')\nopen(os.path.join(tempfile.gettempdir(), 't'), 'w').write('x')\n"
              "os.getcwd()")
    assert r.error is None, r
    a_dir = eval(r.value)
    b = pool.acquire()
    try:
        r = b.run("import os, string, tempfile\nprint(sorted(os.listdir('.')), os.getcwd(), tempfile.gettempdir())\n"
                  "print(string.capwords('a b'))\nprint('leaked' in dir(__builtins__) or hasattr(__import__('builtins'), 'leaked'))")
        assert r.error is None, r
        listing, b_dir, tmp = r.stdout.splitlines()[0].split(" ")
        assert listing == "[]" and b_dir != a_dir and tmp == b_dir
        assert r.stdout.splitlines()[1:] == ["A B", "False"]
        assert "NameError" in b.run("secret").error
        assert b.run("open('notes.txt').read()").error.startswith("Traceback")
        a.close()
        assert b.run("import os\nos.path.exists(" + repr(a_dir) + ")").value == "False"  # A's work dir is gone
        c = pool.acquire()  # a new episode after A closed: the template is still pristine
        with c:
            assert "NameError" in c.run("secret").error
            assert c.run("import os\nos.listdir('.')").value == "[]"
    finally:
        a.close()
        b.close()


def test_close_kills_every_process_of_the_episode(pool):
    marker = f"agentkd-pool-{uuid.uuid4().hex}"
    code = ("import os, subprocess, sys\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}])\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}])\n"
            "    os._exit(0)\n")
    other = pool.acquire()
    other.run("kept = 7")
    with pool.acquire() as sb:
        r = sb.run(code)
        assert r.error is None, r
        assert wait_until(lambda: len(procs_with(marker)) == 2)  # a background child and a setsid daemon
    assert wait_until(lambda: procs_with(marker) == [])
    assert other.run("kept").value == "7"  # closing one episode leaves the others alone
    other.close()


def test_timeouts_and_restarts_stay_inside_one_episode(pool):
    a, b = pool.acquire(), pool.acquire()
    try:
        b.run("y = 5")
        a.run("x = 1")
        r = a.run("import time\nwhile True:\n    try:\n        time.sleep(10)\n    except BaseException:\n        pass",
                  timeout_s=0.3)
        assert r.timed_out and r.restarted, r
        assert "NameError" in a.run("x").error  # a fresh episode replaced it
        r = a.run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
        assert r.restarted and "WorkerDied" in r.error
        assert a.restarts == 2
        assert b.run("y").value == "5" and b.restarts == 0
        # soft timeout: state kept, nothing restarted
        r = b.run("import time\ntime.sleep(5)", timeout_s=0.3)
        assert r.timed_out and not r.restarted and b.run("y").value == "5"
    finally:
        a.close()
        b.close()


def test_killing_its_own_root_still_leaves_nothing_behind(pool):
    marker = f"agentkd-pool-orphan-{uuid.uuid4().hex}"
    with pool.acquire() as sb:
        r = sb.run("import os, signal, subprocess, sys\n"
                   f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}])\n"
                   "os.kill(os.getppid(), signal.SIGKILL)")
        assert r.error is None, r
        assert sb.run("1 + 1").value == "2"
        assert wait_until(lambda: len(procs_with(marker)) == 1)
    assert wait_until(lambda: procs_with(marker) == [])
    with pool.acquire() as sb:  # the pool still hands out working episodes
        assert sb.run("2 + 2").value == "4"


def test_concurrent_acquires(pool):
    def episode(i: int) -> tuple[str | None, str | None]:
        with pool.acquire() as sb:
            sb.run(f"v = {i}\nopen('mine', 'w').write(str(v))")
            time.sleep(0.05)  # all 32 are open at once
            return sb.run("v").value, sb.run("import os\nos.listdir('.'), open('mine').read()").value

    with ThreadPoolExecutor(32) as ex:
        results = list(ex.map(episode, range(32)))
    assert results == [(str(i), repr((["mine"], str(i)))) for i in range(32)]


def test_tools_final_answer_and_candidates(pool):
    a, b = pool.acquire(), pool.acquire()
    try:
        r = a.run("r = lookup('abc')\nr['len']")
        assert r.value == "3", r
        r = a.run("try:\n    refuse(4)\nexcept KeyError as e:\n    print('caught', e)")
        assert r.stdout.strip() == "caught 'no entry 4'", r
        r = a.run("try:\n    final_answer(lookup('q')['key'])\nexcept Exception:\n    print('swallowed')")
        assert r.is_final and r.final_answer == "q" and "swallowed" not in r.stdout
        a.run("n = 1")
        b.run("n = 100")
        ra = a.run_candidates(["n += 1\nn", "n += 2\nn"])
        rb = b.run_candidates(["n += 10\nn", "lookup('x')['len'] + n"])
        assert [r.value for r in ra] == ["2", "3"] and [r.value for r in rb] == ["110", "101"]
        a.commit(ra[1])
        b.commit(rb[0])
        assert a.run("n").value == "3" and b.run("n").value == "110"
        assert a.run("lookup('zz')['len']").value == "2"  # the committed candidate still reaches the host
    finally:
        a.close()
        b.close()


def test_isolation_report_and_identity(pool):
    with pool.acquire() as sb:
        iso, rep = sb.isolation(), sb.isolation_report()
        assert sb.backend == "bwrap" and iso["episode_container"] is False
        # measured by the template kernel inside the shared sandbox, before any episode ran code
        for k in ("network", "filesystem", "pid", "memory", "uid", "seccomp", "work_dir"):
            assert iso[k] is True, (k, rep[k])
        assert rep["work_dir"]["limit_bytes"] == 8 * SandboxConfig().work_dir_mb << 20  # shared by 8 episodes
        assert rep["memory_cgroup"]["ok"] is (sb._box.impl.cgroup is not None)
        r = sb.run("import os\nos.getuid(), sorted(k for k in os.environ if 'KEY' in k or 'TOKEN' in k)")
        uid, secrets = eval(r.value)
        assert uid != 0 and uid == rep["uid"]["uid"] == rep["uid"]["peer_uid"] and secrets == []


# -- the host boundary is the same as Sandbox's ---------------------------------------------------------------

def test_attack_basics_contained_in_process_mode(pool):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.5)
    port = srv.getsockname()[1]
    d = Path(f"/tmp/agentkd-pool-test-{uuid.uuid4().hex[:8]}")
    d.mkdir()
    d.chmod(0o777)
    try:
        with pool.acquire() as sb, pool.acquire() as bystander:
            bystander.run("alive = True")
            r = sb.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')")
            assert r.error and "connected" not in r.stdout
            assert sb.run("import socket\nsocket.getaddrinfo('deb.debian.org', 80)").error
            r = sb.run("print(open('/etc/shadow').read()[:20])")
            assert r.error and "root:" not in r.stdout
            for target in (str(d / "pwned"), "/usr/pwned", "/etc/pwned", str(REPO / "pwned")):
                sb.run(f"open({target!r}, 'w').write('x')")
                assert not Path(target).exists(), target
            r = sb.run("big = b'x' * (10 * 1024 ** 3)")
            assert r.error and ("MemoryError" in r.error or r.restarted)
            r = sb.run("import os, signal\nos.kill(-1, signal.SIGKILL)")  # every process of the uid: refused
            assert "PermissionError" in r.error, r
            assert sb.run("1").value == "1" and bystander.run("alive").value == "True"
        with pytest.raises(TimeoutError):
            srv.accept()
    finally:
        srv.close()
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def test_memory_cap_of_the_shared_sandbox():
    # 2 episodes per container and 200 MB each: 4 children of 150 MB cannot coexist under the 400 MB cgroup
    cfg = SandboxConfig(backend="bwrap", episode_isolation="process", memory_mb=200, episodes_per_container=2,
                        timeout_s=20)
    code = ("import os, time\npids = []\nfor i in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        blob = bytearray(150 * 1024 * 1024)\n        for j in range(0, len(blob), 4096):\n"
            "            blob[j] = 1\n        time.sleep(3)\n        os._exit(0)\n"
            "    pids.append(pid)\nkilled = 0\nfor pid in pids:\n    _, st = os.waitpid(pid, 0)\n"
            "    killed += os.WIFSIGNALED(st)\nprint('killed', killed)")
    with SandboxPool(cfg) as p, p.acquire() as sb:
        r = sb.run(code)
        assert r.restarted or int(r.stdout.split("killed")[1]) >= 2, r
        assert sb.run("3 + 3").value == "6"


# -- container mode -------------------------------------------------------------------------------------------

def test_container_mode_gives_one_sandbox_per_episode():
    cfg = SandboxConfig(backend="bwrap", episode_isolation="container", timeout_s=5)
    with SandboxPool(cfg, tools={"lookup": lookup}, warm=1) as p:
        a = p.acquire()
        assert type(a) is Sandbox
        b = p.acquire()
        try:
            a.run("x = 1")
            assert "NameError" in b.run("x").error
            # separate pid namespaces: each sees only its own few processes
            n = "import os\nlen([p for p in os.listdir('/proc') if p.isdigit()])"
            assert int(a.run(n).value) <= 3 and int(b.run(n).value) <= 3
            assert b.run("lookup('ab')['len']").value == "2"
        finally:
            a.close()
            b.close()
        assert wait_until(lambda: len(p._ready) == 1)  # the next episode's sandbox is already started
        ready = p._ready[0]
        with p.acquire() as c:
            assert c is ready and c.start_time_s is not None
            assert c.run("1 + 1").value == "2"


def test_pool_close_ends_open_episodes():
    marker = f"agentkd-pool-close-{uuid.uuid4().hex}"
    p = SandboxPool(SandboxConfig(backend="bwrap", episode_isolation="process"))
    sb = p.acquire()
    sb.run(f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {marker!r}])")
    assert wait_until(lambda: len(procs_with(marker)) == 1)
    p.close()
    assert wait_until(lambda: procs_with(marker) == [])
    sb.close()  # closing an episode of a closed pool is harmless
    with pytest.raises(Exception, match="closed"):
        p.acquire()


def test_pool_close_ends_every_box_and_races_with_episode_closes():
    """pool.close() stops all its containers at once; an episode close still running then (the collection
    runner closes episodes in the background) ends promptly and leaves nothing behind."""
    marker = f"agentkd-pool-boxes-{uuid.uuid4().hex}"
    p = SandboxPool(SandboxConfig(backend="bwrap", episode_isolation="process", episodes_per_container=1))
    with ThreadPoolExecutor(3) as ex:
        sbs = list(ex.map(lambda _: p.acquire(), range(3)))
    assert len({id(sb._box) for sb in sbs}) == 3  # one container each
    for sb in sbs:
        sb.run(f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
               f"{marker!r}])")
    assert wait_until(lambda: len(procs_with(marker)) == 3)
    with ThreadPoolExecutor(3) as ex:
        closing = [ex.submit(sb.close) for sb in sbs[:2]]
        p.close()
        # they end because their box was killed, not through the 10 s an episode close waits for its root's reply
        # (how fast they end is measured by tools/bench/sandbox.py)
        for f in closing:
            f.result(timeout=9)
    assert wait_until(lambda: procs_with(marker) == [])
    sbs[2].close()


def test_threads_do_not_leak(pool):
    before = threading.active_count()
    for _ in range(5):
        with pool.acquire() as sb:
            sb.run("1")
    assert threading.active_count() <= before + 1
