"""Crash-safe JSONL store: atomic appends, torn-line recovery, streaming reads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

from agentkd.core.jsonl import JsonlStore, iter_jsonl, read_models, repair_tail
from agentkd.core.types import Task


def test_append_and_read_models(tmp_path):
    p = tmp_path / "t.jsonl"
    with JsonlStore(p) as s:
        s.append(Task(id="1", question="q1"))
        s.extend([Task(id="2", question="q2"), {"id": "3", "question": "q3"}])
    assert [t.id for t in read_models(p, Task)] == ["1", "2", "3"]


def test_torn_last_line_is_skipped_with_warning_and_repaired(tmp_path, caplog):
    p = tmp_path / "t.jsonl"
    with JsonlStore(p) as s:
        s.extend([{"i": 0}, {"i": 1}])
    with open(p, "ab") as f:
        f.write(b'{"i": 2, "text": "half a rec')  # crash mid-write
    with caplog.at_level(logging.WARNING):
        assert [o["i"] for o in iter_jsonl(p)] == [0, 1]
    assert "torn last line" in caplog.text
    # reopening for append cuts the torn tail (kept aside) so new records start on a fresh line
    with JsonlStore(p) as s:
        s.append({"i": 3})
    assert [o["i"] for o in iter_jsonl(p)] == [0, 1, 3]
    assert (tmp_path / "t.jsonl.torn").read_bytes().startswith(b'{"i": 2')


def test_complete_last_line_without_newline_is_kept(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_bytes(b'{"i": 0}\n{"i": 1}')
    assert repair_tail(p) == 0
    assert p.read_bytes() == b'{"i": 0}\n{"i": 1}\n'


def test_sigkill_during_writes_leaves_at_most_the_last_line_torn(tmp_path):
    p = tmp_path / "t.jsonl"
    code = textwrap.dedent(f"""
        import os, signal
        from agentkd.core.jsonl import JsonlStore
        s = JsonlStore({str(p)!r}, durable=False)
        for i in range(100000):
            s.append({{"i": i, "pad": "x" * 500}})
            if i == 3000:
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert r.returncode == -9
    rows = list(iter_jsonl(p))
    assert [o["i"] for o in rows] == list(range(len(rows)))
    assert len(rows) == 3001


def test_streams_100k_lines(tmp_path):
    p = tmp_path / "big.jsonl"
    with open(p, "w") as f:
        for i in range(100_000):
            f.write(f'{{"i": {i}}}\n')
    it = iter_jsonl(p)
    assert next(it) == {"i": 0}  # a generator: nothing is loaded up front
    assert sum(1 for _ in it) == 99_999
    assert os.path.getsize(p) > 1_000_000
