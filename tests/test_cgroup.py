"""Per-sandbox cgroups: limits, and cleaning up after agentkd processes that were killed before they could."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentkd.sandbox.cgroup import ROOT, Cgroup, limits_of, sweep_stale

probe = Cgroup.create(64, 8)
if probe is not None:
    probe.remove()
pytestmark = pytest.mark.skipif(probe is None, reason="no writable cgroup hierarchy here (needs root)")

CHILD = ("import sys, time; from agentkd.sandbox.cgroup import Cgroup; c = Cgroup.create(64, 8); "
         "print(*c.dirs, flush=True); time.sleep(600)")


def test_stale_cgroups_of_killed_processes_are_swept_and_live_ones_kept():
    dead = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        dead_dirs = [Path(p) for p in dead.stdout.readline().split()]
        live_dirs = [Path(p) for p in live.stdout.readline().split()]
        assert dead_dirs and live_dirs and all(d.is_dir() for d in dead_dirs + live_dirs)
        dead.kill()  # SIGKILL: no chance to remove its cgroup
        dead.wait()
        assert all(d.is_dir() for d in dead_dirs)
        assert sweep_stale() >= len(dead_dirs)
        assert not any(d.exists() for d in dead_dirs)
        assert all(d.is_dir() for d in live_dirs)  # its owner still runs
    finally:
        for p in (dead, live):
            p.kill()
            p.wait()
        sweep_stale()
    assert not any(d.exists() for d in live_dirs)


def test_limits_are_written_and_removal_kills_members():
    cg = Cgroup.create(128, 16)
    assert cg is not None and cg.limits == {"memory": True, "pids": True}, cg and cg.limits
    if (ROOT / "cgroup.controllers").exists():  # cgroup v2 mounted at ROOT: one cgroup holds both limits
        (d,) = cg.dirs
        expected = {d: (("memory.max", 128 << 20), ("pids.max", 16))}
    else:  # v1: one cgroup per controller hierarchy
        by_ctrl = {d.relative_to(ROOT).parts[0]: d for d in cg.dirs}
        assert sorted(by_ctrl) == ["memory", "pids"], cg.dirs
        expected = {by_ctrl["memory"]: (("memory.limit_in_bytes", 128 << 20),), by_ctrl["pids"]: (("pids.max", 16),)}
    for d, files in expected.items():
        for f, want in files:
            assert (d / f).is_file(), f"{d / f} is missing"
            assert int((d / f).read_text()) == want, f
    proc = subprocess.Popen(["sleep", "600"])
    try:
        assert limits_of(proc.pid) == {"memory": None, "pids": None}  # still in this process's own cgroup
        cg.join(proc.pid)
        assert proc.pid in cg.pids()
        assert limits_of(proc.pid) == {"memory": 128 << 20, "pids": 16}  # what the isolation report reads
        cg.remove()
        assert proc.wait(timeout=5) == -9
        assert not any(d.exists() for d in cg.dirs)
    finally:
        proc.kill()
        proc.wait()
