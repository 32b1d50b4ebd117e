"""Measured isolation: what the host hands the worker's probe (`worker.probe_walls`), and how it judges the
facts the probe sends back in kernel 0's hello.

A wall is reported up (True) only when the probe, inside the sandbox, found it up; down (False) when the
probe saw the host through it; None when it could not tell (the report says why). No backend claims a wall.

    network     the sandbox is in another network namespace than the host, has no interface but loopback, and
                a TCP connect to a listener the host opened on 127.0.0.1 for the probe fails
    filesystem  its "/" is not the host's "/" (device and inode differ) and the host's socket folder for this
                sandbox (a host path that no backend mounts at its own path) does not exist inside
    pid         another pid namespace than the host's, in which the host process (pid and start time) is absent
    uid         the code's uid, mapped out of its user namespace, is not 0; nor is the uid the host sees on the
                kernel's socket (SO_PEERCRED)
    seccomp     a seccomp filter is loaded (/proc/self/status: Seccomp 2)
    memory      a finite RLIMIT_AS (read inside), or a memory limit on the cgroup the host finds the kernel's
                process in (through its pid from SO_PEERCRED; `memory_cgroup`, `procs_cgroup`)
    work_dir    the work dir's file system is no larger than `work_dir_mb` (statvfs inside)
"""

from __future__ import annotations

import os
import socket
import threading

from agentkd.sandbox.cgroup import limits_of

WALLS = ("network", "filesystem", "pid", "uid", "seccomp", "memory", "work_dir")
_lock = threading.Lock()
_host: dict = {}  # this process's facts (pid -> spec part), computed once per process
_listener: dict[int, socket.socket | None] = {}  # pid -> the probe's TCP listener (None: could not open one)


def _facts() -> dict:
    pid = os.getpid()
    facts = _host.get(pid)
    if facts is None:
        st = os.stat("/")
        with open(f"/proc/{pid}/stat") as f:
            start = f.read().rsplit(")", 1)[-1].split()[19]
        facts = _host[pid] = {"net_ns": os.stat("/proc/self/ns/net").st_ino, "pid_ns": os.stat("/proc/self/ns/pid").st_ino,
                              "root": [st.st_dev, st.st_ino], "host_pid": pid, "host_start": start}
    return facts


def _port() -> int | None:
    """The probe listener's port (opened once per process). Connections a sandbox made are accepted and closed
    here, so the backlog never fills (a full one would make the next probe's connect wait)."""
    pid = os.getpid()
    lst = _listener.get(pid, False)
    if lst is False:
        try:
            lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lst.bind(("127.0.0.1", 0))
            lst.listen(64)
            lst.setblocking(False)
        except OSError:
            lst = None
        _listener[pid] = lst
    if lst is None:
        return None
    while True:
        try:
            lst.accept()[0].close()
        except OSError:
            break
    return lst.getsockname()[1]


def host_spec(canary: str) -> dict:
    """What the probe compares against (sent in the worker cfg): this process's namespaces, root and identity,
    the listener's port, and `canary`, a host folder that must not be visible inside (the sandbox's own socket
    folder: it exists while the sandbox runs, and backends mount it elsewhere or not at all)."""
    with _lock:
        return {**_facts(), "port": _port(), "canary": canary}


def _wall(ok: bool | None, why: str, **facts) -> dict:
    return {"ok": ok, "why": why, **facts}


def judge(probe: dict | None, spec: dict | None, peer: tuple[int, int, int] | None, work_dir_mb: int) -> dict[str, dict]:
    """Each wall's verdict ({"ok": True/False/None, "why": ..., facts}) from the probe's facts, the spec it
    was given and the kernel's peer credentials (pid, uid, gid) as the host sees them."""
    if not probe or not spec:
        why = "the worker sent no probe results"
        return {w: _wall(None, why) for w in WALLS} | {"memory_cgroup": _wall(None, why), "procs_cgroup": _wall(None, why)}
    out: dict[str, dict] = {}

    # network
    same = None if probe.get("net_ns") is None else probe["net_ns"] == spec["net_ns"]
    ifaces = probe.get("interfaces")
    outside = None if ifaces is None else [i for i in ifaces if i != "lo"]
    reach = probe.get("reach")
    facts = {"shared_namespace": same, "interfaces": ifaces, "host_listener": "reached" if reach is True else reach}
    if reach is True or same or outside:
        why = "; ".join(s for s in ("it connected to the host's 127.0.0.1 listener" if reach is True else "",
                                    "it shares the host's network namespace" if same else "",
                                    f"it has network interfaces {outside}" if outside else "") if s)
        out["network"] = _wall(False, why, **facts)
    elif same is None or outside is None or spec.get("port") is None:
        out["network"] = _wall(None, "the probe could not read its network namespace or interfaces, or no "
                               "host listener could be opened", **facts)
    else:
        out["network"] = _wall(True, f"own network namespace, loopback only, host listener not reached ({reach})",
                               **facts)

    # filesystem
    root, canary = probe.get("root"), probe.get("canary")
    facts = {"root_is_host_root": None if root is None else root == spec["root"], "host_path_visible": canary,
             "host_path": spec.get("canary")}
    if facts["root_is_host_root"] or canary:
        out["filesystem"] = _wall(False, "its / is the host's /" if facts["root_is_host_root"]
                                  else f"it sees the host path {spec.get('canary')}", **facts)
    elif root is None or canary is None:
        out["filesystem"] = _wall(None, "the probe could not stat / or the host path", **facts)
    else:
        out["filesystem"] = _wall(True, "its / is not the host's and the host path is absent", **facts)

    # pid
    same = None if probe.get("pid_ns") is None else probe["pid_ns"] == spec["pid_ns"]
    seen = probe.get("host_pid_seen")
    facts = {"shared_namespace": same, "host_process_visible": seen}
    if same or seen:
        out["pid"] = _wall(False, "it shares the host's pid namespace" if same else "it sees the host process", **facts)
    elif same is None:
        out["pid"] = _wall(None, "the probe could not read its pid namespace", **facts)
    else:
        out["pid"] = _wall(True, "own pid namespace; the host process is not visible", **facts)

    # uid
    # a non-root uid inside maps to itself on the host with every backend; root inside is looked up in uid_map
    host_uid = probe.get("host_uid") if probe.get("uid") == 0 else probe.get("uid")
    peer_uid = peer[1] if peer else None
    facts = {"uid": probe.get("uid"), "gid": probe.get("gid"), "groups": probe.get("groups"), "host_uid": host_uid,
             "peer_uid": peer_uid, "cap_eff": probe.get("cap_eff")}
    if host_uid == 0 or peer_uid == 0:
        out["uid"] = _wall(False, "the code runs as the host's root", **facts)
    elif host_uid is None and peer_uid is None:
        out["uid"] = _wall(None, "neither the uid map nor the socket's peer credentials could be read", **facts)
    else:
        out["uid"] = _wall(True, f"the code runs as host uid {host_uid if host_uid is not None else peer_uid}", **facts)

    # seccomp
    mode = probe.get("seccomp")
    facts = {"mode": mode, "no_new_privs": probe.get("no_new_privs")}
    out["seccomp"] = (_wall(None, "/proc/self/status has no Seccomp field", **facts) if mode is None else
                      _wall(mode == "2", "a seccomp filter is loaded" if mode == "2" else f"seccomp mode {mode}", **facts))

    # memory (and the cgroup limits the host finds the kernel's process under)
    rl = probe.get("rlimits") or {}
    as_limit = rl.get("RLIMIT_AS")
    cg = limits_of(peer[0]) if peer and peer[0] else None
    mem, pids = (cg or {}).get("memory"), (cg or {}).get("pids")
    facts = {"rlimit_as": None if as_limit is None or as_limit < 0 else as_limit, "cgroup_memory": mem,
             "cgroup_pids": pids, "rlimits": rl}
    if (as_limit is not None and as_limit >= 0) or mem:
        out["memory"] = _wall(True, " and ".join(s for s in (
            f"RLIMIT_AS {as_limit >> 20} MB" if as_limit is not None and as_limit >= 0 else "",
            f"cgroup memory limit {mem >> 20} MB" if mem else "") if s), **facts)
    elif as_limit is None or cg is None:
        out["memory"] = _wall(None, "neither RLIMIT_AS nor the kernel's cgroup could be read", **facts)
    else:
        out["memory"] = _wall(False, "no RLIMIT_AS and no cgroup memory limit", **facts)
    why_cg = "the host could not read the kernel's cgroup" if cg is None else "no such limit on its cgroup"
    out["memory_cgroup"] = _wall(bool(mem) if cg is not None else None,
                                 f"{mem >> 20} MB on its cgroup" if mem else why_cg, limit=mem)
    out["procs_cgroup"] = _wall(bool(pids) if cg is not None else None,
                                f"{pids} processes on its cgroup" if pids else why_cg, limit=pids)

    # work dir
    size = probe.get("workdir_bytes")
    want = work_dir_mb << 20
    facts = {"size_bytes": size, "limit_bytes": want}
    if size is None:
        out["work_dir"] = _wall(None, "the probe could not statvfs its work dir", **facts)
    else:  # tmpfs rounds its size up to whole pages
        ok = size <= want + (1 << 20)
        out["work_dir"] = _wall(ok, f"its file system holds {size >> 20} MB" + ("" if ok else
                                f", more than work_dir_mb={work_dir_mb}: the limit is not enforced"), **facts)
    return out


def summary(report: dict[str, dict]) -> dict[str, bool | None]:
    """{wall: True/False/None}: `Sandbox.isolation()`."""
    return {k: v["ok"] for k, v in report.items()}
