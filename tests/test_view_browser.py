"""The viewer page in a real headless browser (Debian's chromium via selenium): it loads without console
errors, lists the run, filters and search narrow the list, a trajectory opens with its steps and SAG candidates,
hostile model output stays text, and a 5,000-trajectory run stays light (only the rows in view exist).

chromium and chromium-driver come from apt and selenium from the `dev` extra: `make setup` installs them."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from view_fixtures import HOSTILE, make_dataset, make_run

from agentkd.core.jsonl import JsonlStore
from agentkd.core.types import Provenance, Step, Task, Trajectory
from agentkd.view import render_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: run `make setup` (installs agentkd[dev])")
    missing = [p for p in (CHROMIUM, DRIVER) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run `make setup` as root (apt-get installs chromium "
                    "chromium-driver; see APT_PACKAGES in tools/setup.sh)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--disable-extensions"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _keys(driver) -> list[str]:
    # one script call: the rows are redrawn as the list changes, so element handles could go stale
    return driver.execute_script(
        "return [...document.querySelectorAll('#list .row .rtitle')].map((e) => e.textContent)")


def _count(driver) -> str:
    return driver.find_element("id", "count").text


def test_page_browses_filters_searches_and_opens_steps(browser, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.support.ui import Select

    run = make_run(tmp_path)
    page = render_run(run, dataset=make_dataset(tmp_path, run))
    browser.get(page.as_uri())
    assert _wait(lambda: _count(browser) == "6 of 6 shown"), _count(browser)
    assert _errors(browser) == []
    assert sorted(_keys(browser)) == sorted(["gsm8k/q0 #0", "hotpotqa/q1 #0", "hotpotqa/q2 #0", "aime/q3 #0",
                                             "gsm8k/q4 #0", "hotpotqa/q5 #0"])

    # filters narrow the list, and combine
    outcome = Select(browser.find_element("id", "f-outcome"))
    outcome.select_by_value("correct")
    assert sorted(_keys(browser)) == ["gsm8k/q0 #0", "hotpotqa/q2 #0"] and _count(browser) == "2 of 6 shown"
    outcome.select_by_value("error")
    assert _keys(browser) == ["hotpotqa/q5 #0"]
    outcome.select_by_value("steperror")
    assert sorted(_keys(browser)) == ["aime/q3 #0", "hotpotqa/q2 #0"]
    outcome.select_by_value("")
    Select(browser.find_element("id", "f-domain")).select_by_value('"math"')
    assert sorted(_keys(browser)) == ["aime/q3 #0", "gsm8k/q0 #0", "gsm8k/q4 #0"]
    Select(browser.find_element("id", "f-source")).select_by_value('"aime"')
    assert _keys(browser) == ["aime/q3 #0"]
    Select(browser.find_element("id", "f-domain")).select_by_value("")
    Select(browser.find_element("id", "f-source")).select_by_value("")
    Select(browser.find_element("id", "f-verdict")).select_by_value('"rejected"')
    assert _keys(browser) == ["hotpotqa/q1 #0"]
    Select(browser.find_element("id", "f-verdict")).select_by_value("")
    assert len(_keys(browser)) == 6

    # search: words anywhere in the trajectory (here a thought), case-insensitive
    box = browser.find_element("id", "q")
    box.send_keys("zebra_token")
    assert _wait(lambda: _keys(browser) == ["hotpotqa/q1 #0"]), _keys(browser)
    box.clear()
    box.send_keys("no such words anywhere")
    assert _wait(lambda: _count(browser) == "0 of 6 shown")
    assert "No trajectory matches" in browser.find_element("id", "list").text
    box.clear()
    box.send_keys("2+2")
    assert _wait(lambda: _keys(browser) == ["gsm8k/q0 #0"]), _keys(browser)

    # opening one shows its task, score, curation verdict and steps with thought, code, observation, SAG
    browser.find_element("css selector", "#list .row").click()
    detail = browser.find_element("id", "detail")
    assert detail.find_element("css selector", "h2").text == "gsm8k/q0 #0"
    assert "kept (train split)" in detail.text and "equiv=1" in detail.text
    steps = detail.find_elements("css selector", ".step")
    assert len(steps) == 2
    assert steps[0].find_element("css selector", "pre.thought").text == "compute it with SAG"
    code = steps[0].find_element("css selector", "pre.code")
    assert code.text == "x = 2 + 2  # sum\nprint(x)"
    assert code.find_element("css selector", "span.c").text == "# sum"  # highlighted
    assert code.find_element("css selector", "span.b").text == "print"
    assert steps[0].find_element("css selector", "pre.obs").text == "4"
    sag = steps[0].find_element("css selector", ".sag")
    assert "SAG vote: split" in sag.text and "tie-break logprob" in sag.text
    cands = sag.find_elements("css selector", "details.cand")
    assert len(cands) == 3
    assert "chosen" in cands[1].get_attribute("class") and "(chosen)" in cands[1].text
    assert "CANDIDATE_THREE_WRONG" not in sag.text  # folded until opened
    cands[2].find_element("css selector", "summary").click()
    assert "CANDIDATE_THREE_WRONG" in cands[2].find_element("css selector", "pre.cand-output").text
    assert steps[1].find_element("css selector", "pre.final").text == "4"

    # hostile model output is shown as text and never runs
    box.clear()
    box.send_keys("hamlet")
    assert _wait(lambda: _keys(browser) == ["hotpotqa/q2 #0"])
    browser.find_element("css selector", "#list .row").click()
    step = browser.find_element("css selector", "#detail .step")
    assert step.find_element("css selector", "pre.thought").text == "hostile thought " + HOSTILE
    assert step.find_element("css selector", "pre.code").text == f"print('{HOSTILE}')"
    assert step.find_element("css selector", "pre.err").text == "SyntaxError: " + HOSTILE
    assert browser.execute_script("return window.__pwned") is None
    assert len(browser.find_elements("css selector", "script")) == 2
    assert browser.find_elements("css selector", "img, #detail b, #list b") == []
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    assert _errors(browser) == []


def _big_run(root: Path, n: int) -> Path:
    run = root / "big"
    trajs = []
    for i in range(n):
        steps = [Step(index=j, model_output=f"Thought: step {j}\nCode:\n```py\nprint({i} * {j})\n```",
                      thought=f"step {j} of task {i}: zq{i}zq", code=f"print({i} * {j})", observation=str(i * j) * 20)
                 for j in range(3)]
        steps[-1].is_final, steps[-1].final_answer = True, i
        trajs.append(Trajectory(task=Task(id=f"t{i:05d}", question=f"Question number {i}: " + "lorem " * 30,
                                          answer=str(i), source="bulk", domain="math"),
                                system_prompt="You are a CodeAct agent." * 20, user_prompt=f"Task {i}",
                                steps=steps, final_answer=i, status="ok",
                                provenance=Provenance(model="m", sample_index=0)))
    with JsonlStore(run / "trajectories.jsonl", durable=False) as s:
        s.extend(trajs)
    return run


def test_five_thousand_trajectories_stay_light(browser, tmp_path):
    t0 = time.monotonic()
    run = _big_run(tmp_path, 5000)
    t1 = time.monotonic()
    page = render_run(run)
    start = time.monotonic()
    print(f"made {t1 - t0:.1f} s, rendered {start - t1:.1f} s")
    browser.get(page.as_uri())
    assert _wait(lambda: _count(browser) == "5000 of 5000 shown", timeout=15)
    loaded = time.monotonic() - start
    rows = browser.find_elements("css selector", "#list .row")
    assert 5 < len(rows) < 80, len(rows)  # only the rows in view (plus a margin) exist
    assert loaded < 10, f"page took {loaded:.1f} s"
    # scrolling to the end draws the last rows
    browser.execute_script("const l = document.getElementById('list'); l.scrollTop = l.scrollHeight;")
    assert _wait(lambda: "bulk/t04999 #0" in _keys(browser)), _keys(browser)[-3:]
    assert len(browser.find_elements("css selector", "#list .row")) < 80
    box = browser.find_element("id", "q")
    start = time.monotonic()
    box.send_keys("ZQ4321ZQ")  # full-text search over every step of every trajectory
    assert _wait(lambda: _keys(browser) == ["bulk/t04321 #0"], timeout=10), _keys(browser)[:3]
    searched = time.monotonic() - start
    print(f"loaded {loaded:.1f} s, searched {searched:.1f} s")
    assert searched < 5
    browser.find_element("css selector", "#list .row").click()
    assert len(browser.find_elements("css selector", "#detail .step")) == 3
    assert _errors(browser) == []
