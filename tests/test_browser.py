"""A real headless Chromium (Debian's `chromium`) loads the page, types a ticket, presses Ask and finds
the resolution text on the page; a screenshot is kept in .artifacts/browser-answer.png.

Chromium is driven over the DevTools protocol (CDP) with the `websockets` package (a gradio_client
dependency): no Playwright or Selenium. Set-up on a fresh Debian machine:
    apt-get update && apt-get install -y chromium
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

import ui_support as us

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")]

ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1400,1300", "--remote-allow-origins=*"]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Debian's chromium is needed for this test: apt-get update && apt-get install -y chromium")


class DevTools:
    """The smallest CDP client: one page target, commands answered in order, events ignored."""

    def __init__(self, websocket_url: str):
        from websockets.sync.client import connect

        self._exit = contextlib.ExitStack()
        self.socket = self._exit.enter_context(connect(websocket_url, max_size=64 * 2**20, open_timeout=30))
        self.ids = itertools.count(1)

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the centre of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView();"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self._exit.close()


def _page_target(port: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                pages = [t for t in json.load(response) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("chromium's DevTools endpoint did not come up")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from ui.server import create_app
    from ui.settings import ServerSettings

    with us.one_torch_thread():
        service = us.make_service(tmp_path_factory.mktemp("browser") / "home")
        service.warm_up()
        with us.ServerThread(create_app(service, ServerSettings(warm_up=False))) as running:
            yield running


@pytest.fixture
def browser(server):
    port = us.free_port()
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    process = subprocess.Popen(
        [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    tools = None
    try:
        tools = DevTools(_page_target(port))
        yield tools
    finally:
        if tools is not None:
            tools.close()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)


def test_page_answers_a_ticket_in_chromium(server, browser):
    browser.call("Page.enable")
    browser.call("Runtime.enable")
    browser.call("Page.navigate", url=server.url)
    browser.wait_for("!!document.querySelector('#ticket textarea') && !!document.querySelector('#ask-button')",
                     90, "the page to render")
    browser.wait_for("document.querySelector('#status-line').innerText.includes('1 documents')", 30,
                     "the status line (the page's load event has run)")

    browser.evaluate("document.querySelector('#ticket textarea').focus()")
    browser.call("Input.insertText", text=us.MATCH_TICKET)
    assert browser.evaluate("document.querySelector('#ticket textarea').value") == us.MATCH_TICKET
    for attempt in range(3):  # the server clears the ticket box as soon as it takes the question
        browser.click("#ask-button")
        try:
            browser.wait_for("document.querySelector('#ticket textarea').value === ''", 20, "the question to be taken")
            break
        except AssertionError:
            if attempt == 2:
                raise

    found = browser.wait_for(
        f"(() => {{ const r = document.querySelector('#resolution textarea');"
        f" return r && r.value === {json.dumps(us.MATCH_ANSWER)}"
        f" && document.querySelector('#chat').innerText.includes({json.dumps(us.MATCH_ANSWER[:40])}); }})()",
        180, "the resolution text on the page")
    assert found
    text = browser.evaluate("document.body.innerText")
    assert "Match" in text and "home-faq.csv" in text and "How do I reset my password?" in text
    assert "Reasoning" in text
    browser.screenshot(ARTIFACTS / "browser-answer.png")
    assert (ARTIFACTS / "browser-answer.png").stat().st_size > 10_000
