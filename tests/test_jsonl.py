"""Crash-safe JSONL store: atomic appends, torn-line recovery, streaming reads."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import wait_until

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


def _kill_inside_a_large_append(path, mb: int) -> tuple[int, int]:
    """A child appends 3000 small records, then one of `mb` MiB; it is SIGKILLed once that append has
    started to reach the file. Returns (size before the large append, its full line length)."""
    code = textwrap.dedent(f"""
        import os, sys
        from agentkd.core.jsonl import JsonlStore
        s = JsonlStore({str(path)!r}, durable=False)
        for i in range(3000):
            s.append({{"i": i, "pad": "x" * 100}})
        big = {{"i": 3000, "pad": "y" * ({mb} << 20)}}
        print(os.path.getsize({str(path)!r}), flush=True)
        sys.stdin.readline()
        s.append(big)
        sys.stdin.readline()  # a finished append waits here to be killed too
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        before = int(proc.stdout.readline())
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert wait_until(lambda: os.path.getsize(path) > before or proc.poll() is not None, timeout=120)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    return before, len('{"i":3000,"pad":""}\n') + (mb << 20)


def test_sigkill_inside_a_large_append_tears_only_the_last_line(tmp_path, caplog):
    p = tmp_path / "t.jsonl"
    for mb in (64, 256):  # the kill lands a few MiB into the write; a bigger record if it ever finished first
        p.unlink(missing_ok=True)
        before, line = _kill_inside_a_large_append(p, mb)
        written = os.path.getsize(p) - before
        if written < line - 1:
            break
    assert 0 < written < line - 1, f"the append was not caught mid-write ({written} of {line} bytes)"
    raw = p.read_bytes()
    assert raw[before - 1 : before] == b"\n" and raw[before:].startswith(b'{"i":3000,"pad":"yyy')
    with caplog.at_level(logging.WARNING):
        assert [o["i"] for o in iter_jsonl(p)] == list(range(3000))  # every complete record, the torn one skipped
    assert f"t.jsonl:3001: skipping torn last line ({written} bytes)" in caplog.text
    assert repair_tail(p) == written
    assert p.read_bytes() == raw[:before]
    assert (tmp_path / "t.jsonl.torn").read_bytes() == raw[before:] + b"\n"  # kept aside, byte for byte
    with JsonlStore(p) as s:
        s.append({"i": "after"})
    assert [o["i"] for o in iter_jsonl(p)][-2:] == [2999, "after"]


def test_reader_yields_each_record_as_its_line_arrives(tmp_path):
    """A FIFO holds only what was written so far: the first record must come out while the writer has
    not written anything else (a reader that reads the whole file first would block here)."""
    import queue
    import threading

    fifo = tmp_path / "live.jsonl"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # does not block on Linux; the reader's open then does not either
    got: queue.Queue = queue.Queue()

    def read() -> None:
        for obj in iter_jsonl(fifo):
            got.put(obj)
        got.put("eof")

    reader = threading.Thread(target=read, daemon=True)
    try:
        os.write(writer, b'{"i": 0}\n')
        reader.start()
        try:
            first = got.get(timeout=30)
        except queue.Empty:
            pytest.fail("no record within 30 s while the writer keeps the file open: the reader waits for the end")
        assert first == {"i": 0}
        os.write(writer, b'{"i": 1}\nnot json\n{"i": 2}\n')
        assert [got.get(timeout=30) for _ in range(2)] == [{"i": 1}, {"i": 2}]
    finally:
        os.close(writer)  # EOF: the reader ends
    reader.join(timeout=30)
    assert got.get(timeout=5) == "eof" and not reader.is_alive()
