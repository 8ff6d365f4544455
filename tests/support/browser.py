"""A headless Chromium driven over the DevTools protocol, to run a page's JavaScript as a browser
does (its origin, its CORS checks) and read back what it found.

    with Browser() as browser:
        result = browser.evaluate("http://127.0.0.1:8000/", "(async () => (await fetch('/x')).status)()")

Chromium is the Debian package (scripts/setup-test-tools.sh installs it); the protocol is spoken
with `websockets`.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.request import Request, urlopen

from websockets.sync.client import connect

from .waiting import wait_until


class BrowserError(RuntimeError):
    pass


class Browser:
    def __init__(self) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise BrowserError("chromium is not installed (scripts/setup-test-tools.sh installs it)")
        self._profile = Path(tempfile.mkdtemp(prefix="llamadock-chromium-"))
        self._command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                         "--remote-debugging-port=0", f"--user-data-dir={self._profile}", "about:blank"]
        self._process: subprocess.Popen | None = None
        self.port = 0
        self._ids = itertools.count(1)

    def __enter__(self) -> "Browser":
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
        active = self._profile / "DevToolsActivePort"  # Chromium writes its port here once it listens
        wait_until(lambda: active.exists() and active.read_text().strip(), timeout=30,
                   what="Chromium's DevTools port")
        self.port = int(active.read_text().split()[0])
        return self

    def __exit__(self, *exc) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def evaluate(self, page_url: str, script: str, timeout: float = 60) -> object:
        """Open ``page_url`` in a new tab, run ``script`` there (an expression; a promise is awaited)
        and return its value, as JSON gives it."""
        request = Request(f"http://127.0.0.1:{self.port}/json/new?{page_url}", method="PUT")
        target = json.loads(urlopen(request, timeout=10).read())
        try:
            with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
                self._call(ws, "Page.enable", {}, timeout)
                deadline = time.monotonic() + timeout
                while not self._call(ws, "Runtime.evaluate", {"expression": LOADED,
                                                              "returnByValue": True}, timeout)["result"].get("value"):
                    if time.monotonic() > deadline:
                        raise BrowserError(f"{page_url} did not load in {timeout} s")
                    time.sleep(0.05)
                answer = self._call(ws, "Runtime.evaluate", {"expression": script, "awaitPromise": True,
                                                             "returnByValue": True}, timeout)
        finally:
            urlopen(f"http://127.0.0.1:{self.port}/json/close/{target['id']}", timeout=10).read()
        if "exceptionDetails" in answer:
            raise BrowserError(f"the page's script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def tab(self, url: str, timeout: float = 60, dark: bool = False) -> Tab:
        return Tab(self, url, timeout, dark)

    def _call(self, ws, method: str, params: dict, timeout: float) -> dict:
        call_id = next(self._ids)
        ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(ws.recv(timeout=timeout))
            if message.get("id") == call_id:  # events in between are not ours to read
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message["result"]


class Tab:
    """One page kept open: navigate, run scripts, wait on what it shows, take screenshots; and
    what the page did meanwhile (console errors, uncaught exceptions, every URL it requested).

        with browser.tab("http://127.0.0.1:8000/ui/") as tab:
            tab.wait_for("document.querySelectorAll('tr').length > 2")
    """

    def __init__(self, browser: "Browser", url: str, timeout: float = 60, dark: bool = False) -> None:
        self._browser, self._url, self._timeout, self._dark = browser, url, timeout, dark
        self.errors: list[str] = []  # console.error, uncaught exceptions, failed loads
        self.requests: list[str] = []  # every URL the page asked for
        self._target: dict | None = None
        self._stack = ExitStack()
        self._ws = None

    def __enter__(self) -> "Tab":
        port = self._browser.port
        self._target = json.loads(urlopen(Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT"),
                                          timeout=10).read())
        self._ws = self._stack.enter_context(connect(self._target["webSocketDebuggerUrl"], max_size=None,
                                                      open_timeout=10))
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setEmulatedMedia", {"features": [
            {"name": "prefers-color-scheme", "value": "dark" if self._dark else "light"}]})
        self.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.call("Page.navigate", {"url": self._url})
        self.wait_for(LOADED, what=f"{self._url} to load")
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        if self._target is not None:
            urlopen(f"http://127.0.0.1:{self._browser.port}/json/close/{self._target['id']}", timeout=10).read()

    def call(self, method: str, params: dict | None = None) -> dict:
        call_id = next(self._browser._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self._ws.recv(timeout=self._timeout))
            if message.get("id") == call_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message["result"]
            self._note(message)

    def _note(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            self.errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"{params['entry'].get('url', '')}: {params['entry']['text']}")

    def evaluate(self, script: str) -> object:
        """Run ``script`` (an expression; a promise is awaited) and return its value, as JSON gives it."""
        answer = self.call("Runtime.evaluate", {"expression": script, "awaitPromise": True, "returnByValue": True,
                                                "userGesture": True})
        if "exceptionDetails" in answer:
            raise BrowserError(f"the page's script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, script: str, timeout: float = 30, what: str | None = None) -> object:
        """Evaluate ``script`` until it is truthy (what the page shows, polled), and return it."""
        return wait_until(lambda: self.evaluate(script), timeout=timeout, what=what or script, every=0.1)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


# A new tab is about:blank (readyState "complete", an opaque origin) until it has navigated: a
# script run before that would run on the blank page (a fetch from it is another origin's).
LOADED = "location.protocol !== 'about:' && document.readyState === 'complete'"


class PageServer:
    """A folder served over HTTP on ``host`` (any free port): a web page's origin."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        handler = partial(_QuietHandler, directory=str(root))
        self._server = ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        self.origin = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "PageServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass
