"""The playground pages in a real browser (headless Chromium through Selenium), against real
servers in subprocesses: the search viewer of ``autosteer view`` on a log that grows while the
page is open, the playground of ``autosteer serve`` (compare, edit, errors, sweep, keyboard),
and the viewer of ``autosteer serve --log`` with before/after answers.

The references are independent of the page: the trial count and the best configuration's
code are what the ``autosteer best`` command prints for the same log, the answers what the
server's API answers to a request built here, the requested URLs Chrome's own network events.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from browser import (
    ROOT,
        Server,
    artifacts_dir,
    console_problems,
    need_browser,
    requested_urls,
    start_chrome,
    wait_for,
)


def autosteer(*args, cwd):
    """Run the ``autosteer`` command of this checkout; its stdout (it must succeed)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "autosteer", *args], capture_output=True, text=True, cwd=cwd,
                         env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


# elements that stick out of the window (those inside a horizontally scrolling box do not count)
WIDER_THAN_WINDOW = """
const out = [];
for (const e of document.querySelectorAll("body *")) {
  const r = e.getBoundingClientRect();
  if (r.right > window.innerWidth + 1 && !e.closest(".scroll")) out.push(`${e.tagName} ${e.id} ${Math.round(r.right)}`);
}
return out;"""


@pytest.fixture(scope="module")
def search_log(tmp_path_factory):
    """A short real search on the organism with held-out prompts (task_accuracy, 6 trials)."""
    from autosteer.organism.world import heldout_prompts, search_prompts

    folder = tmp_path_factory.mktemp("search")
    for name, (prompts, expected) in (("p.jsonl", search_prompts(6)), ("h.jsonl", heldout_prompts(6))):
        (folder / name).write_text("".join(json.dumps({"prompt": p, "expected": e}) + "\n"
                                           for p, e in zip(prompts, expected)))
    autosteer("search", "--model", "organism", "--prompts", "p.jsonl", "--holdout", "h.jsonl", "--metric",
              "task_accuracy", "--layers", "0:3", "--max-new-tokens", "4", "--iterations", "6", "--population", "2",
              "--quiet", cwd=folder)
    return folder / "steer_log.tsv"


@pytest.fixture(scope="module")
def served(search_log):
    """``autosteer serve`` on the organism with the search's best as a preset and the viewer on its log."""
    need_browser()
    folder = search_log.parent
    (folder / "best.json").write_text(autosteer("best", str(search_log), "--json", cwd=folder))
    server = Server("serve", "--model", "organism", "--preset", "best=best.json", "--log", str(search_log),
                    "--holdout", "h.jsonl", cwd=folder, ready="health")
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser():
    need_browser()
    driver = start_chrome()
    yield driver
    driver.quit()


@pytest.fixture
def chrome(browser):
    """The module's browser on a blank page, its network and console logs drained: each test
    sees only its own requests."""
    browser.get("about:blank")
    browser.set_window_size(1280, 1000)
    requested_urls(browser)
    console_problems(browser)
    return browser


def test_viewer_follows_a_growing_log(search_log, chrome, tmp_path):
    best = autosteer("best", str(search_log), cwd=tmp_path)
    trials = re.search(r"\| (\d+ trials):", best).group(1)
    n = int(trials.split()[0])
    held_base, held_best = re.search(r"Held-out: ([0-9.]+) -> ([0-9.]+)", best).groups()
    code = autosteer("best", str(search_log), "--code", cwd=tmp_path).rstrip("\n")
    lines = search_log.read_text().splitlines(keepends=True)
    assert len(lines) == n + 2  # header, baseline, one row per trial

    growing = tmp_path / "growing.tsv"
    growing.write_text("".join(lines[:4]))  # the header, the baseline and 2 trials: a search under way
    server = Server("view", str(growing), "--poll", "0.2", cwd=tmp_path)
    try:
        chrome.get(server.url)
        text = lambda testid: chrome.find_element("css selector", f'[data-testid="{testid}"]').text
        wait_for(lambda: text("trials") == "2 trials", what="2 trials")
        with growing.open("a") as fh:  # the search writes on; the open page catches up by itself
            fh.writelines(lines[4:])
        wait_for(lambda: text("trials") == trials, what=trials)
        plotted = chrome.find_elements("css selector", '[data-testid="plot"] .pt:not(.pt-baseline)')
        assert len(plotted) == n
        assert sorted(int(p.get_attribute("data-iteration")) for p in plotted) == list(range(1, n + 1))
        assert text("best-code") == code
        assert chrome.find_element("id", "holdout-baseline").text == held_base
        assert chrome.find_element("id", "holdout-best").text == held_best
        assert "need a model" in chrome.find_element("id", "answers-note").text
        assert not chrome.find_element("css selector", '[data-testid="error"]').is_displayed()
        chrome.save_screenshot(str(artifacts_dir() / "viewer.png"))

        # readable at a phone's width: nothing wider than the window
        chrome.set_window_size(400, 900)  # headless Chromium keeps at least 500 px
        wait_for(lambda: chrome.execute_script("return window.innerWidth <= 500"), what="the narrow window")
        wide = chrome.execute_script(WIDER_THAN_WINDOW)
        assert wide == [], wide
        chrome.save_screenshot(str(artifacts_dir() / "viewer-narrow.png"))
        chrome.set_window_size(1280, 1000)

        with growing.open("a") as fh:  # a corrupt row: the page names the line read_log names
            fh.write("this is not a row\n")
        wait_for(lambda: chrome.find_element("css selector", '[data-testid="error"]').is_displayed(),
                 what="the error box")
        assert f"line {n + 3}" in text("error")
        assert f"line {n + 3}: this is not a row" in chrome.find_element("id", "log-error-line").text

        urls = requested_urls(chrome)
        assert urls and all(u.startswith((server.url, "data:")) for u in urls), urls
        assert console_problems(chrome) == []
    finally:
        server.close()


def by_testid(driver, name):
    return driver.find_element("css selector", f'[data-testid="{name}"]')


def api_answer(server, prompt, steering=None, max_tokens=128):
    """The server's own greedy answer (not streamed) to the request the page should send."""
    body = {"model": "organism", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    if steering is not None:
        body["steering"] = steering
    status, data = server.post("v1/completions", body)
    assert status == 200, data
    return data["choices"][0]["text"]


def type_into(element, text):
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(text)


def test_playground_compares_edits_and_sweeps(served, search_log, chrome):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    prompt = "12 plus 7 ="
    chrome.get(served.url)
    wait_for(lambda: chrome.execute_script("return document.body.dataset.ready") == "1", what="the page to start")
    Select(by_testid(chrome, "preset")).select_by_value("best")
    by_testid(chrome, "request").send_keys(prompt)
    by_testid(chrome, "compare").click()
    rates = lambda: [by_testid(chrome, f"rate-{c}").text for c in ("unsteered", "steered")]
    wait_for(lambda: all("tokens/s" in r for r in rates()), what="both answers")
    unsteered, steered = by_testid(chrome, "answer-unsteered").text, by_testid(chrome, "answer-steered").text
    # the page shows what the API answers to the same body (greedy, 128 tokens, the preset by name)
    assert steered == api_answer(served, prompt, "best").strip()
    assert unsteered == api_answer(served, prompt).strip()
    assert steered and unsteered and steered != unsteered
    shown = json.loads(by_testid(chrome, "json").text)
    assert shown == {"model": "organism", "prompt": prompt, "max_tokens": 128, "temperature": 0, "stream": True,
                     "stream_options": {"include_usage": True}, "steering": "best"}
    wait_for(lambda: by_testid(chrome, "code").text == autosteer("best", str(search_log), "--code",
                                                              cwd=search_log.parent).rstrip("\n"),
             what="the preset's Python lines")

    # a coefficient the server refuses: its 400 message and field, in place
    coeff = chrome.find_elements("css selector", '[data-testid="vector-coeff"]')[0]
    type_into(coeff, "1e6")
    wait_for(lambda: by_testid(chrome, "error").is_displayed(), what="the error")
    assert "steering[0].coeff" in by_testid(chrome, "error").text
    assert "field-bad" in coeff.get_attribute("class")
    status, data = served.post("playground/code", {"steering": json.loads(by_testid(chrome, "json").text)["steering"]})
    assert status == 400 and data["error"]["message"] in by_testid(chrome, "error").text
    for message in console_problems(chrome):  # the browser logs the refused request itself, nothing else
        assert "playground/code" in message and "status of 400" in message, message

    # typed values beyond the slider's span are kept (the slider stops at its end)
    type_into(coeff, "3.5")
    wait_for(lambda: not by_testid(chrome, "error").is_displayed(), what="the error to clear")
    sent = json.loads(by_testid(chrome, "json").text)["steering"]
    assert sent[0]["coeff"] == 3.5 and sent[0]["layer_idx"] == 0  # edited: the vectors go explicitly
    assert float(chrome.find_elements("css selector", '[data-testid="vector-coeff-slider"]')[0]
                 .get_attribute("value")) == 2.0
    layer = chrome.find_elements("css selector", '[data-testid="vector-layer"]')[0]
    type_into(layer, "1")
    wait_for(lambda: json.loads(by_testid(chrome, "json").text)["steering"][0]["layer_idx"] == 1, what="layer 1")

    # the sweep: one request per coefficient of vector #1, each answer what the API answers
    type_into(by_testid(chrome, "sweep-coeffs"), "0.1, 0.5, 2")
    by_testid(chrome, "sweep").click()
    cells = lambda: chrome.find_elements("css selector", '[data-testid="sweep-answer"]')
    wait_for(lambda: len(cells()) == 3 and all(
        "tokens/s" in c.find_element("xpath", "following-sibling::div").text for c in cells()), what="the sweep")
    base = json.loads(by_testid(chrome, "json").text)["steering"]
    for cell, c in zip(cells(), (0.1, 0.5, 2.0)):
        steering = [dict(base[0], coeff=c)] + base[1:]
        assert cell.text == api_answer(served, prompt, steering).strip(), c

    chrome.set_window_size(1280, 2000)  # the whole page: answers, editor, sweep, code
    chrome.execute_script("window.scrollTo(0, 0)")
    chrome.save_screenshot(str(artifacts_dir() / "playground.png"))
    chrome.set_window_size(1280, 1000)

    # keyboard: Tab from the request box reaches Compare, Enter presses it
    by_testid(chrome, "request").click()
    for _ in range(8):
        if chrome.switch_to.active_element.get_attribute("data-testid") == "compare":
            break
        chrome.switch_to.active_element.send_keys(Keys.TAB)
    assert chrome.switch_to.active_element.get_attribute("data-testid") == "compare"
    before = by_testid(chrome, "rate-steered").text
    chrome.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: by_testid(chrome, "rate-steered").text not in ("", "…", before), what="the keyboard compare")
    wait_for(lambda: "tokens/s" in by_testid(chrome, "rate-steered").text, what="the keyboard compare")
    assert by_testid(chrome, "answer-steered").text == api_answer(
        served, prompt, json.loads(by_testid(chrome, "json").text)["steering"]).strip()

    chrome.set_window_size(400, 900)
    wait_for(lambda: chrome.execute_script("return window.innerWidth <= 500"), what="the narrow window")
    wide = chrome.execute_script(WIDER_THAN_WINDOW)
    assert wide == [], wide
    chrome.set_window_size(1280, 1000)
    urls = requested_urls(chrome)
    assert urls and all(u.startswith((served.url, "data:")) for u in urls), urls
    assert console_problems(chrome) == []


def test_served_viewer_answers_held_out_prompts(served, search_log, chrome):
    from autosteer import read_log
    from autosteer.cli import read_prompts

    prompts, _ = read_prompts(str(search_log.parent / "h.jsonl"))
    best = json.loads((search_log.parent / "best.json").read_text())["candidate"]["vectors"]
    max_tokens = read_log(search_log).config["max_new_tokens"]
    chrome.get(served.url + "viewer")
    after = lambda: chrome.find_elements("css selector", '[data-testid="answer-after"]')
    wait_for(lambda: len(after()) == len(prompts) and all(c.text != "…" for c in after()), what="the answers")
    before = chrome.find_elements("css selector", '[data-testid="answer-before"]')
    for prompt, b, a in zip(prompts, before, after()):
        assert b.text == api_answer(served, prompt, max_tokens=max_tokens).strip()
        assert a.text == api_answer(served, prompt, best, max_tokens=max_tokens).strip()
    chrome.set_window_size(1280, 1800)
    chrome.execute_script("window.scrollTo(0, 0)")
    chrome.save_screenshot(str(artifacts_dir() / "viewer-served.png"))
    urls = requested_urls(chrome)
    assert all(u.startswith((served.url, "data:")) for u in urls), urls
    assert console_problems(chrome) == []
