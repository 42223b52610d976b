"""Looking at report.html in a real browser: headless Chromium loads a copy of the page with a
small script that records, once everything has loaded, whether the answers section is visible,
whether every image decoded, and whether anything is wider than the window; the DOM Chromium
dumps carries that record back. Also the screenshot of the first screen the README links.

``python -m coldstart_bench.analyse.report.browser REPORT.html [--screenshot PNG]`` runs both.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CANDIDATES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "apt-get install chromium"
LAPTOP = (1366, 768)  # a common laptop screen, in CSS pixels
_MARK = "coldstart-bench-check"

_PROBE = """
<script>
window.addEventListener("load", function () {
  var answers = document.getElementById("answers");
  var box = answers ? answers.getBoundingClientRect() : null;
  var style = answers ? getComputedStyle(answers) : null;
  var images = Array.prototype.slice.call(document.images);
  var record = {
    answers_present: !!answers,
    answers_visible: !!(answers && box.width > 0 && box.height > 0 && style.display !== "none"
                        && style.visibility !== "hidden" && answers.offsetParent !== null),
    answers_top: box ? box.top + window.scrollY : null,
    images: images.length,
    images_broken: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                         .map(function (i) { return i.alt || i.src.slice(0, 40); }),
    scroll_width: document.documentElement.scrollWidth,
    viewport_width: window.innerWidth,
    toc_links: document.querySelectorAll("nav.toc a").length
  };
  var out = document.createElement("pre");
  out.id = "MARK";
  out.textContent = JSON.stringify(record);
  document.body.appendChild(out);
});
</script>
""".replace("MARK", _MARK)


class BrowserError(RuntimeError):
    """Chromium could not be run or gave no answer; the message says what happened."""


@dataclass
class PageCheck:
    answers_present: bool
    answers_visible: bool
    answers_top: float | None
    images: int
    images_broken: list[str]
    scroll_width: int
    viewport_width: int
    toc_links: int

    @property
    def overflows(self) -> bool:
        return self.scroll_width > self.viewport_width

    def problems(self) -> list[str]:
        out = []
        if not self.answers_visible:
            out.append("the answers section is not visible")
        if self.images_broken:
            out.append(f"{len(self.images_broken)} of {self.images} images did not load: {self.images_broken}")
        if self.overflows:
            out.append(f"the page is {self.scroll_width} px wide in a {self.viewport_width} px window")
        if self.toc_links == 0:
            out.append("no table of contents")
        return out


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: Sequence[str], timeout: float) -> str:
    chromium = find_chromium()
    if chromium is None:
        raise BrowserError(f"no Chromium on this machine; install it with `{INSTALL}`")
    with tempfile.TemporaryDirectory(prefix="coldstart-chromium-") as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",  # as root (CI containers) Chromium refuses to start with its sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"Chromium did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BrowserError(f"Chromium exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def check_page(html_file: Path, size: tuple[int, int] = LAPTOP, timeout: float = 120.0) -> PageCheck:
    """Load a copy of the report with the probe in headless Chromium at `size` and read its record."""
    text = Path(html_file).read_text(encoding="utf-8")
    probed = text.replace("</body>", _PROBE + "</body>", 1) if "</body>" in text else text + _PROBE
    with tempfile.TemporaryDirectory(prefix="coldstart-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(probed, encoding="utf-8")
        dom = _run(
            [
                f"--window-size={size[0]},{size[1]}",
                "--virtual-time-budget=10000",
                "--run-all-compositor-stages-before-draw",
                "--dump-dom",
                page.as_uri(),
            ],
            timeout,
        )
    return parse_record(dom)


def parse_record(dom: str) -> PageCheck:
    start = dom.find(f'id="{_MARK}"')
    if start < 0:
        raise BrowserError("the page's check did not run (no record in the DOM Chromium dumped)")
    body = dom[dom.index(">", start) + 1 : dom.index("</pre>", start)]
    import html

    record: dict[str, Any] = json.loads(html.unescape(body))
    return PageCheck(**record)


def screenshot(html_file: Path, png: Path, size: tuple[int, int] = LAPTOP, timeout: float = 120.0) -> Path:
    """The first screen of the report at `size`, as a PNG."""
    png = Path(png).resolve()
    _run(
        [
            f"--window-size={size[0]},{size[1]}",
            "--virtual-time-budget=10000",
            "--run-all-compositor-stages-before-draw",
            f"--screenshot={png}",
            Path(html_file).resolve().as_uri(),
        ],
        timeout,
    )
    if not png.is_file() or png.stat().st_size == 0:
        raise BrowserError(f"Chromium wrote no screenshot to {png}")
    return png


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html")
    parser.add_argument("--screenshot", type=Path, help="also write the first screen to this PNG")
    args = parser.parse_args(argv)
    try:
        check = check_page(args.report)
        print(json.dumps(check.__dict__ | {"problems": check.problems()}, indent=1))
        if args.screenshot:
            print(screenshot(args.report, args.screenshot))
    except BrowserError as exc:
        print(f"browser check: {exc}", file=sys.stderr)
        return 2
    return 1 if check.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
