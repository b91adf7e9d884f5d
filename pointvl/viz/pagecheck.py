"""Open exported pages in headless Chromium and report what a reader would see broken.

    python -m pointvl.viz.pagecheck results/notebooks/*.html results/figures/*.html

For each page: a copy beside it (so relative links resolve) gets a probe script at the top
of its head that records uncaught errors, failed resource loads and ``console.error`` calls;
once the page has loaded and MathJax's queue is empty, the probe writes what it found into
the DOM, which Chromium dumps (``--dump-dom``, with a virtual time budget so timers run):

    errors        every error the page raised or logged
    figures       Plotly figures on the page / how many of them are blank (no SVG drawn)
    raw_math      text still showing TeX (``$$``, ``\\frac`` ...) after MathJax ran

A page passes when there are no errors, no blank figures and no raw math. Needs the Debian
package ``chromium`` (``scripts/setup.sh`` installs it); no network is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-default-apps", "--disable-extensions",
    "--disable-sync", "--no-first-run", "--mute-audio", "--allow-file-access-from-files",
    "--hide-scrollbars", "--window-size=1400,1000",
)  # fmt: skip
RAW_TEX = r"\$\$|\\frac\b|\\mathrm\b|\\sum_|\\lVert|\\hat\{|\\begin\{"
_PROBE = """<script>(function () {
  var errs = [];
  window.addEventListener("error", function (e) {
    var t = e.target, src = t && (t.src || t.href);
    errs.push(src ? "failed to load " + src : "error: " + e.message);
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errs.push("rejection: " + e.reason); });
  var ce = console.error;
  console.error = function () {
    errs.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return ce.apply(console, arguments);
  };
  function report() {
    var figs = document.querySelectorAll(".plotly-graph-div"), blank = 0;
    figs.forEach(function (g) { if (!g.querySelector(".main-svg")) { blank += 1; } });
    var text = document.body.innerText, re = new RegExp(%(raw)s, "g"), raw = [], m;
    while ((m = re.exec(text)) && raw.length < 5) {
      raw.push(text.slice(Math.max(0, m.index - 40), m.index + 40));
    }
    var out = document.createElement("pre");
    out.id = "__pagecheck";
    out.textContent = JSON.stringify({errors: errs, figures: figs.length, blank: blank, raw_math: raw});
    document.body.appendChild(out);
  }
  window.addEventListener("load", function () {
    setTimeout(function () {
      var mj = window.MathJax;
      if (mj && mj.startup && mj.startup.promise) { mj.startup.promise.then(report, report); }
      else if (mj && mj.Hub) { mj.Hub.Queue(report); } else { report(); }
    }, 500);
  });
})();</script>"""


@dataclasses.dataclass
class PageReport:
    """What a reader's browser showed for one page."""

    page: str
    errors: list[str]
    figures: int
    blank: int
    raw_math: list[str]
    finished: bool
    """False when the probe never reported (the page hung, or MathJax never finished)."""

    @property
    def ok(self) -> bool:
        return self.finished and not self.errors and not self.blank and not self.raw_math

    def summary(self) -> str:
        if self.ok:
            return f"ok    {self.page}: {self.figures} figures"
        if not self.finished:
            return f"FAIL  {self.page}: the page never finished loading"
        return (f"FAIL  {self.page}: {len(self.errors)} errors {self.errors[:3]}, "
                f"{self.blank}/{self.figures} blank figures, raw math {self.raw_math[:2]}")  # fmt: skip


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(page: str | os.PathLike, budget_ms: int = 30_000, timeout: int = 120) -> PageReport:
    """Load ``page`` in headless Chromium (no network) and report (see the module doc)."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    page = Path(page).resolve()
    html = page.read_text()
    probe = _PROBE % {"raw": json.dumps(RAW_TEX)}
    head = re.search(r"<head[^>]*>", html, re.I)
    html = html[: head.end()] + probe + html[head.end() :] if head else probe + html
    fd, tmp = tempfile.mkstemp(prefix=".pagecheck-", suffix=".html", dir=page.parent)
    with tempfile.TemporaryDirectory(prefix="pagecheck-profile-") as profile:
        try:
            with os.fdopen(fd, "w") as f:
                f.write(html)
            cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--virtual-time-budget={budget_ms}", "--dump-dom", Path(tmp).as_uri()]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        finally:
            Path(tmp).unlink(missing_ok=True)
    found = re.search(r'<pre id="__pagecheck">(.*?)</pre>', proc.stdout, re.S)
    if not found:
        return PageReport(str(page), [proc.stderr[-500:]], 0, 0, [], finished=False)
    data = json.loads(_unescape(found.group(1)))
    return PageReport(str(page), data["errors"], data["figures"], data["blank"],
                      data["raw_math"], finished=True)  # fmt: skip


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


def main(argv: list[str] | None = None) -> int:
    pages = argv if argv is not None else sys.argv[1:]
    if not pages:
        print(__doc__)
        return 2
    reports = [check_page(p) for p in pages]
    for r in reports:
        print(r.summary())
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
