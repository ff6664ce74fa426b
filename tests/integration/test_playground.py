"""The playground pages in a real browser (headless Chromium through Selenium), against a real
server in a subprocess: the search viewer on a log that grows while the page is open.

The references are independent of the page: the trial count and the best configuration's
code are what the ``autosteer best`` command prints for the same log; the requested URLs
come from Chrome's own network events.
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
def chrome():
    need_browser()
    driver = start_chrome()
    yield driver
    driver.quit()


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
