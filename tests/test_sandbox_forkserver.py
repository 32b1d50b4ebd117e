"""The forkserver backend specifically: namespaces per sandbox, a clean fork server, restarts, and that nothing
a sandbox started outlives it, with or without a cgroup. (The behaviour and attack suite in test_sandbox.py
runs on it too.)"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest
from conftest import procs_with, wait_until

from agentkd.sandbox import Sandbox, SandboxConfig, SandboxError
from agentkd.sandbox.backends import backend_class
from agentkd.sandbox.backends import forkserver as fs

_why = backend_class("forkserver").unavailable(SandboxConfig(backend="forkserver"))
pytestmark = pytest.mark.skipif(_why is not None, reason=f"forkserver backend unavailable: {_why}")

NS = ("pid", "mnt", "net", "ipc", "uts")
READ_NS = "import os\n{k: os.stat(f'/proc/self/ns/{k}').st_ino for k in " + repr(NS) + "}"


def make(**kw) -> Sandbox:
    kw.setdefault("timeout_s", 5)
    return Sandbox(SandboxConfig(backend="forkserver", **kw))


def namespaces(sb: Sandbox) -> dict[str, int]:
    r = sb.run(READ_NS)
    assert r.error is None, r
    return eval(r.value)  # a dict of ints, printed by our own code


def procs_in_pid_ns(inode: int) -> list[int]:
    """Host pids of live processes in the pid namespace with this inode."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.stat(p / "ns" / "pid").st_ino == inode:
                    out.append(int(p.name))
            except OSError:
                pass
    return out



def test_sandboxes_get_their_own_namespaces_and_files():
    host = {k: os.stat(f"/proc/self/ns/{k}").st_ino for k in NS}
    with make() as a, make() as b:
        na, nb = namespaces(a), namespaces(b)
        for k in NS:
            assert na[k] != nb[k] and na[k] != host[k] and nb[k] != host[k], (k, na, nb, host)
        assert a.run("open('/work/mine.txt', 'w').write('a')\nopen('/tmp/t.txt', 'w').write('a')").error is None
        r = b.run("import os\n(os.path.exists('/work/mine.txt'), os.path.exists('/tmp/t.txt'), os.listdir('/work'))")
        assert r.value == "(False, False, [])", r
        assert a.run("open('/work/mine.txt').read()").value == "'a'"
        assert a.run("import os\n(os.getpid(), os.getuid() != 0)").value == "(2, True)"  # launcher is pid 1
        root = fs.shared_rootdir()  # the server prepares roots there, in its own mount namespace
        st = os.lstat(root)
        assert os.listdir(root) == [] and st.st_uid == 0 and st.st_mode & 0o777 == 0o700
        assert f" {root} " not in Path("/proc/self/mountinfo").read_text()  # nothing of it reaches the host


FS_VIEW = ("import os\n"
           "mounts = {{l.split()[4]: l.split()[5].split(',')[0] for l in open('/proc/self/mountinfo')}}\n"
           "({{p: (os.stat(p).st_dev, os.stat(p).st_ino) for p in ('/', '/work', '/tmp', '/proc', '/run/agentkd', '/usr')}},"
           " mounts['/'], mounts['/usr'], os.path.exists({extra!r}))")


def fs_view(sb: Sandbox, extra: str = "/nonexistent") -> tuple[dict, str, str, bool]:
    r = sb.run(FS_VIEW.format(extra=extra))
    assert r.error is None, r
    return eval(r.value)  # our own code's output


def test_read_only_root_is_prepared_once_per_plan():
    import tempfile

    with tempfile.TemporaryDirectory(dir="/var/tmp") as extra, \
            make() as a, make() as b, make(extra_ro_paths=[extra]) as c:  # (not under /tmp: its tmpfs hides it)
        (da, ra, ua, xa), (db, rb, ub, _), (dc, rc, uc, xc) = fs_view(a, extra), fs_view(b), fs_view(c, extra)
        assert da["/"] == db["/"] and da["/usr"] == db["/usr"]  # one prepared root for one plan...
        assert dc["/"] != da["/"] and xc and not xa  # ... another for another plan
        for own in ("/work", "/tmp", "/proc", "/run/agentkd"):  # each sandbox's own mounts
            assert len({da[own], db[own], dc[own]}) == 3 and da[own] != da["/"], own
        assert ra == rb == rc == ua == ub == uc == "ro"  # the shared root and its binds stay read-only
        r = a.run("open('/usr/agentkd-x', 'w')")
        assert r.error is not None and "Read-only file system" in r.error, r


def test_sandboxes_build_their_own_root_without_a_prepared_one(monkeypatch):
    spawn = fs._Server.spawn
    monkeypatch.setattr(fs._Server, "spawn", lambda self, err_w, cfg_r, plan=None: spawn(self, err_w, cfg_r))
    with make() as a, make() as b:
        (da, ra, ua, _), (db, _, _, _) = fs_view(a), fs_view(b)
        assert da["/"] != db["/"] and ra == "rw" and ua == "ro"  # the per-sandbox build, as before
        assert a.run("open('/work/x', 'w').write('a')").value == "1"
        assert b.run("import os\nos.listdir('/work')").value == "[]"
        assert a.run("open('/etc/shadow').read()").error is not None


def test_a_plan_other_than_the_prepared_one_is_built_in_full():
    from agentkd.sandbox.worker import _own_fs, split_fs

    fs_ops = [["root", "/r"], ["ro", "/usr", "/usr"], ["tmpfs", "/work", 1, "0777"], ["proc", "/proc"],
              ["rw", "/sock", "/run/agentkd"]]
    shared, own = split_fs(fs_ops[1:])
    assert shared == [["ro", "/usr", "/usr"], ["dir", "/work"], ["dir", "/proc"], ["dir", "/run/agentkd"]]
    assert own == fs_ops[2:]
    assert _own_fs(fs_ops, ("/r", shared, "/r/0")) == [["base", "/r/0"], *own]
    assert _own_fs(fs_ops, ("/other", shared, "/other/0")) == fs_ops  # another host folder
    assert _own_fs(fs_ops, ("/r", shared[1:], "/r/0")) == fs_ops  # another shared part
    assert _own_fs(fs_ops, None) == fs_ops


def test_fork_server_and_sandboxes_hold_no_host_secrets(monkeypatch):
    fs.stop_servers()  # the next start launches a new server, while the key is set
    monkeypatch.setenv("AGENTKD_FS_TEST_API_KEY", "sk-forkserver-secret")
    with make() as sb:
        pid = fs.server_pid()
        assert pid is not None
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"sk-forkserver-secret" not in environ and b"_API_KEY" not in environ
        assert b"PATH=" in environ  # it has the sandbox environment
        r = sb.run("import os\n[k for k in os.environ if k.endswith('_API_KEY') or 'TOKEN' in k]")
        assert r.value == "[]"
        # nothing of the server's leaks in: the kernel's own fds only (stdio, devnull, its socket, the two capture
        # memfds, and the one listdir opens)
        r = sb.run("import os\nos.listdir('/proc/self/fd')")
        assert r.error is None and set(eval(r.value)) <= {str(fd) for fd in range(8)}, r


def test_killed_fork_server_is_replaced():
    with make() as sb:
        old = fs.server_pid()
        assert old is not None
        os.kill(old, signal.SIGKILL)
        # its sandboxes die with it (parent-death signal, re-armed after the uid drop)
        assert wait_until(lambda: sb._impl is not None and not sb._impl.alive())
        with make() as sb2:  # the next start gets a new server
            assert sb2.run("6 * 7").value == "42"
            new = fs.server_pid()
            assert new is not None and new != old
        r = sb.run("1 + 1")  # the dead sandbox restarts on the new server
        assert r.restarted and sb.run("1 + 1").value == "2"


def test_starts_do_not_wait_for_the_fork_servers_replies():
    # launching only sends the spawn request (and the sandbox's cfg into its pipe); the reply is read later. With
    # the server stopped, three launches return, and once it runs again all three start on that same server
    # (a host that waited for each reply would have timed out on the first and replaced the server)
    with make() as warm:
        assert warm.run("1 + 1").value == "2"
        pid = fs.server_pid()
        sbs = [make() for _ in range(3)]
        os.kill(pid, signal.SIGSTOP)
        try:
            for sb in sbs:
                sb.launch()
        finally:
            os.kill(pid, signal.SIGCONT)
        try:
            assert [sb.run("6 * 7").value for sb in sbs] == ["42"] * 3
            assert fs.server_pid() == pid
        finally:
            for sb in sbs:
                sb.close()


def test_a_cfg_larger_than_the_pipe_still_reaches_the_sandbox():
    # the cfg is written before the server forked the sandbox: what does not fit in the pipe goes once it exists
    names = ["math"] + [f"mod{i:06d}" for i in range(12000)]  # ~130 KB of cfg, twice a pipe's 64 KiB
    with make(allowed_imports=names) as sb:
        assert sb.run("import math\nmath.sqrt(49)").value == "7.0"


def test_a_start_whose_fork_server_died_before_answering_fails_and_the_next_gets_a_new_server():
    with make() as warm:
        assert warm.run("1 + 1").value == "2"
        pid = fs.server_pid()
        sb = make()
        os.kill(pid, signal.SIGSTOP)
        sb.launch()  # sent, not answered
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(SandboxError, match="fork server"):
            sb.start()
        sb.close()
    with make() as sb2:
        assert sb2.run("6 * 7").value == "42"
        assert fs.server_pid() not in (None, pid)


DAEMONS = ("import subprocess, sys, os\n"
           "subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)', {m!r}],"
           " start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
           "if os.fork() == 0:\n    os.setsid()\n    os.execv(sys.executable, [sys.executable, '-c',"
           " 'import time\\ntime.sleep(600)', {m!r}])")


def _start_daemons(sb: Sandbox) -> tuple[str, int]:
    marker = f"agentkd-fs-daemon-{uuid.uuid4().hex}"
    ns = namespaces(sb)["pid"]
    assert sb.run(DAEMONS.format(m=marker)).error is None
    assert wait_until(lambda: len(procs_with(marker)) == 2)
    assert len(procs_in_pid_ns(ns)) >= 4  # launcher, kernel, two daemons
    return marker, ns


@pytest.mark.parametrize("cgroup", [True, False])
def test_close_leaves_no_process(cgroup, monkeypatch):
    if cgroup:
        probe = fs.Cgroup.create(64, 8)
        if probe is None:
            pytest.skip("no writable cgroup hierarchy here (a cgroup v2 or v1 memory/pids hierarchy agentkd can "
                        "create cgroups in; needs root)")
        probe.remove()
    else:
        monkeypatch.setattr(fs.Cgroup, "create", classmethod(lambda cls, *a, **k: None))
    sb = make()
    sb.start()
    assert (sb._impl.cgroup is not None) is cgroup
    assert sb.isolation()["memory_cgroup"] is cgroup  # measured: the host finds the kernel under its cgroup
    first = sb._impl.proc.pid
    marker, ns = _start_daemons(sb)
    sb.close()
    # close is synchronous: pid 1's pidfd turns readable only once its namespace is empty
    assert procs_in_pid_ns(ns) == [] and procs_with(marker) == []
    assert wait_until(lambda: not Path(f"/proc/{first}/ns").exists())  # reaped by the fork server


def test_killing_pid1_kills_the_namespace_without_cgroup(monkeypatch):
    # no cgroup: SIGKILL to the sandbox's pid 1 (the host's pidfd) alone takes every process with it
    monkeypatch.setattr(fs.Cgroup, "create", classmethod(lambda cls, *a, **k: None))
    with make() as sb:
        marker, ns = _start_daemons(sb)
        sb._impl.proc.kill()
        assert wait_until(lambda: procs_in_pid_ns(ns) == [] and procs_with(marker) == [])
        r = sb.run("1 + 1")
        assert r.restarted and sb.run("2 + 2").value == "4"


def test_start_failure_is_reported(monkeypatch):
    # a sandbox whose root cannot be built exits at once: the error it printed reaches the host
    from agentkd.sandbox import SandboxError

    orig = fs.namespace_worker_cfg

    def bad_root(backend, worker_cfg, rootdir):
        exe, cfg, on = orig(backend, worker_cfg, rootdir)
        return exe, {**cfg, "fs": [("root", "/nonexistent-agentkd-root"), *cfg["fs"][1:]]}, on

    monkeypatch.setattr(fs, "namespace_worker_cfg", bad_root)
    sb = make(start_timeout_s=5)
    with pytest.raises(SandboxError, match=r"(?s)exited before its worker connected.*nonexistent-agentkd-root"):
        sb.start()
    sb.close()
    monkeypatch.undo()
    with make() as sb:  # the server is fine
        assert sb.run("3").value == "3"


HOST = """
import sys, threading, time
from agentkd.sandbox import Sandbox, SandboxConfig
from agentkd.sandbox.backends import forkserver as fs

def start():
    global sb
    sb = Sandbox(SandboxConfig(backend="forkserver"))
    sb.start()
    r = sb.run(sys.argv[2])
    assert r.error is None, r

if sys.argv[1] == "thread":  # the server's parent-death signal would follow this thread: it is not used
    t = threading.Thread(target=start)
    t.start()
    t.join()
else:
    start()
print(fs.server_pid(), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("starter", ["main", "thread"])
def test_fork_server_and_sandboxes_die_with_a_killed_host(starter):
    import subprocess
    import sys

    marker = f"agentkd-fs-orphan-{uuid.uuid4().hex}"
    code = DAEMONS.format(m=marker)
    host = subprocess.Popen([sys.executable, "-c", HOST, starter, code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        server = int(host.stdout.readline())
        assert wait_until(lambda: len(set(procs_with(marker)) - {host.pid}) == 2)  # (its argv has the marker)
    finally:
        host.kill()
        host.wait()
    try:
        assert wait_until(lambda: procs_with(marker) == [] and not running(server))
    finally:  # when it fails, do not leave the orphans behind
        for pid in [*procs_with(marker), server]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
