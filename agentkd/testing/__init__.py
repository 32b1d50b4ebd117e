"""Test doubles, labelled as such: nothing in the product imports this package.

- `ScriptedModel`: a deterministic `ChatModel` that replays a script (tests of the episode loop).
- `StandinServer`: an OpenAI-compatible HTTP server on 127.0.0.1 with scripted CodeAct replies, a fixed
  latency and injected faults (tests of the clients, collection runs, benchmarks). It tells the FTP pass
  from agent turns by the request's shape (no stop sequences, no assistant turn) and finds the question
  among those it was given (`questions=`), so it never depends on agentkd's prompt wording.
"""

from agentkd.testing.scripted import ScriptedModel
from agentkd.testing.standin import StandinServer, answer_for

__all__ = ["ScriptedModel", "StandinServer", "answer_for"]
