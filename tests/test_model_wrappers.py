"""Wrappers around a provider: retry (with Retry-After), request cache, budget, rate limit; error mapping."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentkd.models import ModelError
from agentkd.models.api import to_model_error
from agentkd.models.wrappers import (
    BudgetedModel,
    BudgetExceeded,
    CachedModel,
    ClientConfig,
    RateLimitedModel,
    RequestCache,
    RetryingModel,
    wrap_model,
)
from agentkd.testing import ScriptedModel

MSG = [{"role": "user", "content": "hi"}]


def flaky(failures: list[ModelError]):
    def script(messages, prefill):
        if failures:
            raise failures.pop(0)
        return "ok"

    return ScriptedModel(script)


async def test_retry_counts_and_honours_retry_after():
    inner = flaky([ModelError("429", retryable=True, retry_after=0.3, status=429),
                   ModelError("500", retryable=True, status=500)])
    m = RetryingModel(inner, retries=3, backoff_s=0.01)
    t0 = time.perf_counter()
    [c] = await m.generate(MSG)
    assert c.text == "ok" and time.perf_counter() - t0 >= 0.3
    assert m.stats.retries == {"429": 1, "500": 1} and m.stats.retries_total == 2


async def test_non_retryable_and_exhausted():
    m = RetryingModel(flaky([ModelError("bad request", retryable=False, status=400)]), retries=3, backoff_s=0.01)
    with pytest.raises(ModelError, match="bad request"):
        await m.generate(MSG)
    assert m.stats.retries_total == 0
    m = RetryingModel(flaky([ModelError("x", retryable=True)] * 5), retries=2, backoff_s=0.01)
    with pytest.raises(ModelError):
        await m.generate(MSG)
    assert m.stats.retries_total == 2


async def test_cache_replays_identical_requests_only(tmp_path):
    inner = ScriptedModel(lambda m, p: f"reply {len(inner.calls)}")
    m = CachedModel(inner, RequestCache(tmp_path / "c.sqlite"))
    a = await m.generate(MSG, seed=1, temperature=0.7)
    b = await m.generate(MSG, seed=1, temperature=0.7)
    c = await m.generate(MSG, seed=2, temperature=0.7)
    assert a[0].text == b[0].text == "reply 1" and b[0].cached and not a[0].cached
    assert c[0].text == "reply 2" and len(inner.calls) == 2
    # persistent across processes/runs: answers are committed by the next pass of the event loop
    await asyncio.sleep(0)
    m2 = CachedModel(ScriptedModel([]), RequestCache(tmp_path / "c.sqlite"))
    assert (await m2.generate(MSG, seed=1, temperature=0.7))[0].text == "reply 1"


async def test_cache_group_commits_once_per_loop_pass(tmp_path):
    """A burst of answers stored in one pass of the loop is one transaction, written in the next pass;
    until then `get` serves them from memory. Off a loop, `put` writes at once."""
    import sqlite3

    from agentkd.models.base import Completion

    cache = RequestCache(tmp_path / "c.sqlite")
    reader = sqlite3.connect(tmp_path / "c.sqlite")
    commits = []
    cache._conn().set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    for i in range(5):
        cache.put(f"k{i}", "m", {"i": i}, [Completion(text=f"t{i}")])
    assert reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0  # not written yet...
    assert cache.get("k3")[0].text == "t3"  # ... but already served
    await asyncio.sleep(0)
    assert reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 5 and commits == ["COMMIT"]
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: cache.put("k9", "m", {}, [Completion(text="t9")]))  # a thread with no loop of its own
    assert reader.execute("SELECT response FROM requests WHERE key='k9'").fetchone() is not None


async def test_an_answer_is_committed_before_the_next_request_leaves(tmp_path):
    """An episode that goes from an answer straight to its next call within one pass of the loop (the
    first-thought pass, then the first agent turn) finds the first answer in the file when the second
    request is sent, so a crash while it is in flight loses only that one call."""
    import sqlite3

    reader = sqlite3.connect(tmp_path / "c.sqlite")
    in_file_at_send = []

    def script(messages, prefill):
        in_file_at_send.append(reader.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
        return f"reply {len(in_file_at_send)}"

    m = CachedModel(ScriptedModel(script), RequestCache(tmp_path / "c.sqlite"))
    await m.generate(MSG, seed=1)  # no pass of the loop between these two calls
    await m.generate(MSG, seed=2)
    assert in_file_at_send == [0, 1]
    assert (await m.generate(MSG, seed=1))[0].cached and in_file_at_send == [0, 1]  # a hit sends nothing


async def test_cache_write_failure_keeps_answers_pending_and_retries(tmp_path, caplog):
    import sqlite3

    from agentkd.models.base import Completion

    cache = RequestCache(tmp_path / "c.sqlite")
    reader = sqlite3.connect(tmp_path / "c.sqlite")
    cache._INSERT = "INSERT INTO no_such_table VALUES (?,?,?,?,?,?)"  # every write fails, like a full disk
    cache.put("k1", "m", {}, [Completion(text="t1")])
    await asyncio.sleep(0)
    assert "1 answers not written yet" in caplog.text and cache.get("k1")[0].text == "t1"
    del cache._INSERT  # the disk has room again: the next pass writes both
    cache.put("k2", "m", {}, [Completion(text="t2")])
    await asyncio.sleep(0)
    assert sorted(r[0] for r in reader.execute("SELECT key FROM requests")) == ["k1", "k2"]


def test_fresh_cache_answers_misses_without_sql(tmp_path):
    """A cache file the object created holds only what it stored: misses need no query; a cache opened
    on an existing file asks SQLite (another run may have written it)."""
    from agentkd.models.base import Completion

    def selects(cache):
        seen = []
        cache._conn().set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("SELECT") else None)
        return seen

    fresh = RequestCache(tmp_path / "c.sqlite")
    seen = selects(fresh)
    assert fresh.get("k1") is None and seen == []
    fresh.put("k1", "m", {}, [Completion(text="t1")])
    fresh.flush()
    assert fresh.get("k1")[0].text == "t1" and len(seen) == 1  # a stored key is read back from the file
    assert fresh.get("k2") is None and len(seen) == 1
    reopened = RequestCache(tmp_path / "c.sqlite")
    seen = selects(reopened)
    assert reopened.get("k2") is None and reopened.get("k1")[0].text == "t1" and len(seen) == 2


async def test_budget_stops_new_calls_with_recipe_prices(tmp_path):
    inner = ScriptedModel(lambda m, p: "one two three four")
    m = BudgetedModel(inner, budget_usd=2e-5, price_in_per_mtok=1.0, price_out_per_mtok=2.0)
    [c] = await m.generate(MSG)
    assert c.cost_usd == pytest.approx((1 * 1.0 + 4 * 2.0) / 1e6)  # 9e-6 per call
    await m.generate(MSG)
    await m.generate(MSG)  # 1.8e-5 spent < 2e-5: allowed, and now past the budget
    with pytest.raises(BudgetExceeded, match="budget of \\$2e-05 spent"):
        await m.generate(MSG)
    assert len(inner.calls) == 3 and m.spent_usd == pytest.approx(2.7e-5)
    # a resumed run starts from what was spent before
    assert BudgetedModel(inner, budget_usd=2e-5, spent_usd=2.7e-5).exhausted()


async def test_rate_limit_bounds_concurrency():
    active, peak = 0, 0

    class Slow(ScriptedModel):
        async def _generate(self, messages, **kw):
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            return await super()._generate(messages, **kw)

    m = RateLimitedModel(Slow(lambda ms, p: "x"), max_concurrency=3)
    await asyncio.gather(*(m.generate(MSG) for _ in range(12)))
    assert peak == 3


async def test_wrap_model_order(tmp_path):
    m = wrap_model(ScriptedModel(["a"]), ClientConfig(budget_usd=1.0), RequestCache(tmp_path / "c.sqlite"))
    chain = []
    while m is not None:
        chain.append(type(m).__name__)
        m = getattr(m, "inner", None)
    assert chain == ["CachedModel", "BudgetedModel", "RetryingModel", "RateLimitedModel", "ScriptedModel"]
    assert not isinstance(wrap_model(ScriptedModel([]), ClientConfig(), None), CachedModel)


async def test_wrappers_share_one_stats_object(tmp_path):
    """Retries, cache hits and spend of a whole chain land on the one ClientStats the run reads."""
    from agentkd.models.stats import ClientStats

    failures = [ModelError("429", retryable=True, status=429), ModelError("t", retryable=True, kind="timeout")]

    def script(messages, prefill):
        if failures:
            raise failures.pop(0)
        return "one two"

    stats = ClientStats()
    cfg = ClientConfig(backoff_s=0.01, price_in_per_mtok=1.0, price_out_per_mtok=1.0)
    m = wrap_model(ScriptedModel(script), cfg, RequestCache(tmp_path / "c.sqlite"), stats)
    await m.generate(MSG)
    await m.generate(MSG)  # the same request: served by the cache, costs nothing
    assert stats.retries == {"429": 1, "timeout": 1}
    assert (stats.cache_hits, stats.cache_misses) == (1, 1)
    assert stats.spent_usd == pytest.approx(3e-6) and stats.new_usd == pytest.approx(3e-6)


def test_error_classification():
    class RateLimitError(Exception):
        status_code = 429

    class BadRequestError(Exception):
        status_code = 400

    assert to_model_error(RateLimitError("slow down")).retryable
    assert not to_model_error(BadRequestError("nope")).retryable
    assert to_model_error(type("Timeout", (Exception,), {})("t")).retryable
