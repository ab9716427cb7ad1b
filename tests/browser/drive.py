"""Drives Debian's headless Chromium over the DevTools protocol on a pipe (no WebDriver, no
network): loads the exporter's /tasks page, reads the rendered DOM, submits the filter form as a
person would (choose a status, press Filter), reads the DOM again, and saves a screenshot.

Usage: drive.py URL SCREENSHOT.png
Prints one JSON object: {"before": {...}, "after": {...}}, each with the page's title, url, the
job ids of the table's rows, the messages as displayed, and whether the page's body was
tampered with (a script from a task message that ran would set data-pwned).
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

URL, SHOT = sys.argv[1], sys.argv[2]
READ = """JSON.stringify({
  title: document.title,
  url: location.href,
  pwned: document.body.dataset.pwned || null,
  rows: [...document.querySelectorAll('tbody tr')].map(tr => tr.cells[0].innerText.split('\\n')[0]),
  messages: [...document.querySelectorAll('td.msg')].map(td => td.textContent),
  statuses: [...document.querySelectorAll('tbody tr')].map(tr => tr.cells[3].textContent),
  scripts: document.querySelectorAll('script').length,
})"""


class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="cdb-browser-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():
            # Through fresh descriptors: dup2 onto the same number would keep close-on-exec.
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             "--window-size=1400,900", f"--user-data-dir={self.profile}",
             "--remote-debugging-pipe", "about:blank"],
            preexec_fn=fds, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=open(os.environ.get("CHROMIUM_LOG", os.devnull), "w"),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def _read(self, deadline):
        while b"\0" not in self.buffer:
            if time.time() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.from_chrome, 65536)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_event(self, method, session, timeout=30):
        deadline = time.time() + timeout
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == method and m.get("sessionId") == session:
                    del self.events[: i + 1]
                    return m
            self.events.append(self._read(deadline))

    def close(self):
        self.proc.kill()
        self.proc.wait()


def main():
    b = Browser()
    try:
        target = b.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        b.call("Page.enable", session=s)
        b.call("Page.navigate", {"url": URL}, session=s)
        b.wait_event("Page.loadEventFired", s)

        def read():
            r = b.call("Runtime.evaluate", {"expression": READ, "returnByValue": True}, session=s)
            return json.loads(r["result"]["value"])

        before = read()
        shot = b.call("Page.captureScreenshot", {"format": "png"}, session=s)
        with open(SHOT, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        # A person picks "failed" in the status list and presses Filter.
        b.call("Runtime.evaluate", {"expression":
               "document.querySelector('select[name=status]').value = 'failed';"
               "document.querySelector('form button[type=submit]').click();"}, session=s)
        b.wait_event("Page.loadEventFired", s)
        after = read()
        print(json.dumps({"before": before, "after": after}))
    finally:
        b.close()


main()
