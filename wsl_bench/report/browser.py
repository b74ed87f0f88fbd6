"""Open a report's index.html in headless Chromium and check that it renders.

Talks the DevTools protocol over a pipe (``--remote-debugging-pipe``: commands on fd 3, replies on
fd 4, NUL-terminated JSON), so it needs no network, no port and no Python package beyond the
standard library. It collects console errors, uncaught exceptions and failed loads, checks that
every <img> decoded, exercises the sortable tables and gallery filters, and takes a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)

# Run in the page after load: first wait until every image has decoded (or failed) ...
_IMAGES_PROBE = r"""
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return JSON.stringify({images: imgs.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0})),
                         title: document.title});
})()
"""

# ... then, after the screenshot, exercise the sortable tables and the gallery filter.
_INTERACTION_PROBE = r"""
(() => {
  const tables = Array.from(document.querySelectorAll('table.sortable'));
  let sorted_ok = true;
  for (const t of tables) {
    const th = t.tHead.rows[t.tHead.rows.length - 1].cells[t.tHead.rows[0].cells.length - 1];
    th.click();
    const vals = Array.from(t.tBodies[0].rows).map(r => parseFloat(r.cells[r.cells.length - 1].getAttribute('data-v')))
                     .filter(v => !isNaN(v));
    for (let k = 1; k < vals.length; k++) if (vals[k] < vals[k - 1]) sorted_ok = false;
  }
  let filter = null;
  const sel = document.getElementById('f-method');
  if (sel && sel.options.length > 1) {
    sel.value = sel.options[1].value;
    sel.dispatchEvent(new Event('change'));
    const tiles = Array.from(document.querySelectorAll('#gallery-grid .tile'));
    const shown = tiles.filter(t => !t.classList.contains('hidden'));
    filter = {total: tiles.length, shown: shown.length,
              consistent: shown.every(t => ['', sel.value].includes(t.getAttribute('data-method')))};
    sel.value = '';
    sel.dispatchEvent(new Event('change'));
  }
  let rows_filter = null;
  const rf = document.querySelector('select.rowfilter');
  if (rf && rf.options.length > 1) {
    rf.value = rf.options[1].value;
    rf.dispatchEvent(new Event('change'));
    const t = document.querySelector('table[data-table="' + rf.getAttribute('data-for') + '"]');
    const rows = Array.from(t.tBodies[0].rows), shown = rows.filter(r => !r.classList.contains('hidden'));
    rows_filter = {total: rows.length, shown: shown.length,
                   consistent: shown.every(r => r.cells[0].getAttribute('data-v') === rf.value)};
    rf.value = '';
    rf.dispatchEvent(new Event('change'));
  }
  return JSON.stringify({n_tables: tables.length, sorted_ok, filter, rows_filter});
})()
"""


@dataclass
class PageCheck:
    """What the browser saw."""

    console_errors: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    n_tables: int = 0
    sorted_ok: bool = False
    filter: dict | None = None  # gallery filter by method: {total, shown, consistent}
    rows_filter: dict | None = None  # table row filter by threshold: {total, shown, consistent}
    title: str = ""
    screenshot: Path | None = None

    @property
    def broken_images(self) -> list[str]:
        return [i["src"] for i in self.images if not i["ok"]]

    @property
    def ok(self) -> bool:
        return not self.console_errors and not self.broken_images


def find_chromium() -> str | None:
    """The Chromium binary (Debian's `chromium`, or `chromium-browser` / `google-chrome`), None if absent."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Pipe:
    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int):
        self.proc, self.w, self.r = proc, to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == want:
                if "error" in reply:
                    raise RuntimeError(f"Chromium {method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.events.append(self._read(deadline))
            except TimeoutError:
                return

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self.r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)


def check_page(
    html: Path, screenshot: Path | None = None, width: int = 1400, height: int = 1100, timeout: float = 60.0,
    full_page: bool = False,
) -> PageCheck:
    """Load `html` in headless Chromium; report console errors and broken images; save a screenshot
    (of the first `height` pixels, or of the whole page with `full_page`, capped at 16,000 px)."""
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("Chromium is not installed; on Debian: apt-get update && apt-get install -y chromium")
    html = Path(html).resolve()
    cmd_r, cmd_w = os.pipe()
    out_r, out_w = os.pipe()

    def child_fds() -> None:  # the pipe protocol wants commands on fd 3 and replies on fd 4
        hi_r, hi_w = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
        os.dup2(hi_r, 3)
        os.dup2(hi_w, 4)

    with tempfile.TemporaryDirectory(prefix="wsl-bench-chromium-") as profile:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,
            close_fds=False,  # keeps the fds 3 and 4 made above; Python's own fds are non-inheritable (PEP 446)
        )
        os.close(cmd_r)
        os.close(out_w)
        pipe = _Pipe(proc, cmd_w, out_r)
        try:
            return _run_checks(pipe, html, screenshot, width, height, timeout, full_page)
        finally:
            try:
                pipe.send("Browser.close", timeout=5)
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(cmd_w)
            os.close(out_r)


def _run_checks(
    pipe: _Pipe, html: Path, screenshot: Path | None, width: int, height: int, timeout: float, full_page: bool
) -> PageCheck:
    target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.send(f"{domain}.enable", session=session)
    pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
              session=session)
    pipe.send("Page.navigate", {"url": html.as_uri()}, session=session)
    pipe.wait_event("Page.loadEventFired", timeout=timeout)

    def evaluate(expression: str) -> dict:
        res = pipe.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                        session=session, timeout=timeout)
        if "exceptionDetails" in res:
            raise RuntimeError(f"the page probe failed: {res['exceptionDetails']}")
        return json.loads(res["result"]["value"])

    loaded = evaluate(_IMAGES_PROBE)
    check = PageCheck(images=loaded["images"], title=loaded["title"])
    if screenshot is not None:
        if full_page:
            size = pipe.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": int(min(size["height"], 16000)), "deviceScaleFactor": 1, "mobile": False},
                      session=session)
        shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=timeout)
        screenshot = Path(screenshot)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        check.screenshot = screenshot
    probe = evaluate(_INTERACTION_PROBE)
    check.n_tables, check.sorted_ok, check.filter = probe["n_tables"], probe["sorted_ok"], probe["filter"]
    check.rows_filter = probe["rows_filter"]
    pipe.drain(0.3)
    for ev in pipe.events:
        p = ev.get("params", {})
        m = ev.get("method")
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            check.console_errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            check.console_errors.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            check.console_errors.append(f"log: {e.get('text')} {e.get('url', '')}".strip())
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            check.console_errors.append(f"load failed: {p.get('errorText')} ({p.get('type')})")
    return check
