"""Drive headless Chromium over the DevTools protocol (CDP): load a page, wait for the SPA, read the DOM.

    from tests.support.browser import Chromium, find_chromium, rendered_dom
    with Chromium() as b:                      # raises RuntimeError if no chromium binary is found
        b.goto("http://127.0.0.1:4200/deployments")
        b.wait_for("document.body.innerText.includes('weekly-job')", timeout=60)
        html = b.evaluate("document.documentElement.outerHTML")
    html = rendered_dom(url, until="!!document.querySelector('img')")   # one-shot form

Why CDP and not `chromium --dump-dom --virtual-time-budget`: the Prefect UI fetches its data
after load, and a virtual time budget does not wait for real network I/O; polling the live
page until a condition holds does. Install the browser with infra/install_chromium.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """$CHROMIUM if set, else the first Chromium/Chrome binary on PATH, else None."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((p for p in map(shutil.which, NAMES) if p), None)


class Chromium:
    """One headless Chromium (own process group, temp profile) and one page, driven over CDP."""

    def __init__(self, binary: str | None = None, start_timeout: float = 30):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise RuntimeError(f"no Chromium binary on PATH (tried {', '.join(NAMES)}); run infra/install_chromium.sh")
        self.start_timeout = start_timeout
        self._id = 0

    def __enter__(self) -> Chromium:
        self.profile = tempfile.mkdtemp(prefix="irsflow-chromium-")
        # --no-sandbox: the sandbox refuses to run as root; port 0 + DevToolsActivePort avoids port races.
        args = [
            self.binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "--window-size=1400,1000",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )  # own group: killpg reaches the renderer/GPU children
        try:
            self.ws = connect(self._page_ws_url(), max_size=None, open_timeout=10)
        except BaseException:
            self._kill()
            raise
        return self

    def _page_ws_url(self) -> str:
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited {self.proc.returncode}: {self.proc.stderr.read().decode()[-2000:]}"
                )
            if port_file.exists() and port_file.read_text().strip():
                port = port_file.read_text().split()[0]
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise RuntimeError(f"chromium did not open its DevTools port in {self.start_timeout}s")

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            self._kill()

    def _kill(self) -> None:
        # SIGTERM first so Chromium reaps its own children; then SIGKILL whatever is left in the group.
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, **params) -> dict:
        """One CDP command on the page; returns its result (events in between are dropped)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"CDP {method}: {msg['error']}")
                return msg["result"]

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """Value of a JS expression in the page (JSON-serialisable; promises are awaited)."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression!r}: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.25):
        """Poll a JS expression until it is truthy; return its value, or raise TimeoutError with the page text."""
        deadline = time.time() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # e.g. document.body is still null mid-navigation
                value = None
            if value:
                return value
            if time.time() > deadline:
                text = self.evaluate("document.body ? document.body.innerText.slice(0, 1500) : ''")
                raise TimeoutError(
                    f"{expression!r} still false after {timeout}s at {self.evaluate('location.href')};"
                    f" page text: {text!r}"
                )
            time.sleep(interval)


def rendered_dom(url: str, until: str = "document.readyState === 'complete'", timeout: float = 60) -> str:
    """Open url in a fresh headless Chromium, wait until the JS expression `until` is truthy, return outerHTML."""
    with Chromium() as b:
        b.goto(url)
        b.wait_for(until, timeout)
        return b.evaluate("document.documentElement.outerHTML")
