"""A headless Chromium for the browser tests (the OS's ``chromium`` and ``chromium-driver``
packages, driven by Selenium), a real server in a subprocess, and helpers to check what
the page requested.

``tests/run_all.sh`` installs the Debian packages when they are missing and sets
``AUTOSTEER_REQUIRE_BROWSER=1``, so in CI a missing browser fails; elsewhere the
browser tests are skipped with the command that installs it.  Screenshots go to
``$AUTOSTEER_ARTIFACTS`` (default ``build/test-artifacts/``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def artifacts_dir() -> Path:
    path = Path(os.environ.get("AUTOSTEER_ARTIFACTS", ROOT / "build" / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def need_browser() -> None:
    """Skip (or fail, under tests/run_all.sh) when Chromium, its driver or Selenium is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    for extra in ("fastapi", "uvicorn"):
        try:
            __import__(extra)
        except ImportError:
            missing.append(f"the {extra} package (pip install -e '.[test]')")
    if missing:
        message = (f"browser tests need {', '.join(missing)}; "
                   "apt-get install -y chromium chromium-driver (tests/run_all.sh does it)")
        if os.environ.get("AUTOSTEER_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def start_chrome(width: int = 1280, height: int = 1000):
    """A headless Chromium whose performance log records the page's network events."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--metrics-recording-only", "--hide-scrollbars"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    return driver


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call (Chrome's performance log, CDP events)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def console_problems(driver) -> list[str]:
    """Console messages at WARNING or above (a missing favicon, a script error ...)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") in ("WARNING", "SEVERE")]


def wait_for(predicate, timeout: float = 30.0, what: str = "the page", interval: float = 0.1):
    """Poll ``predicate()`` until it returns a truthy value; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - elements come and go while the page renders
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m autosteer ARGS --port P`` in a subprocess on a free port; ``url`` answers
    once ``ready`` (a path) does."""

    def __init__(self, *args: str, cwd: Path, ready: str = "", timeout: float = 180.0) -> None:
        import urllib.error
        import urllib.request

        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   OMP_NUM_THREADS="1")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.log = open(cwd / f"server-{port}.log", "w+")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen([sys.executable, "-m", "autosteer", *args, "--port", str(port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                out = self.output()
                self.close()
                raise AssertionError(f"the server exited with status {self.proc.returncode}: {out}")
            try:
                with urllib.request.urlopen(self.url + ready, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                out = self.output()
                self.close()
                raise AssertionError(f"the server did not answer in {timeout:.0f} s: {out}")
            time.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        """POST JSON to the server (urllib, not the page): status and decoded JSON answer."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
