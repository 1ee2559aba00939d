"""A real browser for tests: Debian's ``chromium``, headless, driven by ``chromedriver`` over the W3C
WebDriver protocol (plain HTTP; no client library needed).

``tests/support/browser-setup.sh`` installs both (``make test`` runs it).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from producer.devstack import free_port

#: The key of an element reference in WebDriver's JSON.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def find_binaries() -> tuple[str, str]:
    """(chromium, chromedriver) on PATH, or AssertionError saying how to install them."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    assert chromium and driver, "no chromium/chromedriver: run `sh tests/support/browser-setup.sh` (Debian, root)"
    return chromium, driver


class Browser:
    """One headless Chromium session.

    Args:
        log: Where chromedriver writes its log.
        size: The window's width and height (px).
    """

    def __init__(self, log: Path, size: tuple[int, int] = (1400, 1250)) -> None:
        chromium, driver = find_binaries()
        port = free_port()
        self._log = log.open("w")
        self.driver = subprocess.Popen([driver, f"--port={port}"], stdout=self._log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"chromedriver did not start: {log.read_text()[-2000:]}"
            time.sleep(0.1)
        options = {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={size[0]},{size[1]}"],
        }  # fmt: skip
        caps = {"browserName": "chrome", "goog:chromeOptions": options, "goog:loggingPrefs": {"browser": "ALL"}}
        answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{answer['sessionId']}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self.http.request(method, path, json=body if body is not None else ({} if method == "POST" else None))
        value = r.json().get("value")
        if r.status_code >= 400:
            raise AssertionError(f"WebDriver {method} {path}: {r.status_code} {value}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def find(self, css: str) -> str:
        """The element matching ``css`` (its WebDriver reference)."""
        return str(self._call("POST", f"{self.session}/element", {"using": "css selector", "value": css})[ELEMENT])

    def type(self, css: str, text: str, clear: bool = True) -> None:
        element = self.find(css)
        if clear:
            self._call("POST", f"{self.session}/element/{element}/clear")
        self._call("POST", f"{self.session}/element/{element}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"{self.session}/element/{self.find(css)}/click")

    def text(self, css: str) -> str:
        return str(self._call("GET", f"{self.session}/element/{self.find(css)}/text"))

    def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` are ``args``) in the page; its return value."""
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, timeout_s: float = 60.0, what: str = "the page") -> Any:
        """Poll ``script`` until it returns something truthy (the page changes on its own)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.run(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not reached within {timeout_s} s")
            time.sleep(0.1)

    def console(self) -> list[dict[str, Any]]:
        """The browser's console since the last call (errors, CSP violations, failed loads)."""
        return list(self._call("POST", f"{self.session}/se/log", {"type": "browser"}))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", f"{self.session}/screenshot")))

    def close(self) -> None:
        try:
            self._call("DELETE", self.session)
        finally:
            self.driver.terminate()
            self.driver.wait(10)
            self.http.close()
            self._log.close()
