"""report.html in a real browser (headless Chromium): the answers section is visible, every image
loaded, nothing is wider than a laptop screen. Built from a stored run, so no Docker is needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coldstart_bench import cli
from coldstart_bench.analyse.report.browser import INSTALL, LAPTOP, check_page, find_chromium, parse_record, screenshot

V1_RUN = Path(__file__).resolve().parents[1] / "data" / "baseline-v1"

needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason=f"headless Chromium is not installed here: `{INSTALL}` (./run test installs it)"
)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(V1_RUN, run)
    assert cli.main(["report", str(run)]) == cli.EXIT_OK
    return run / "report.html"


@needs_chromium
def test_the_report_works_in_a_browser(report_html: Path) -> None:
    check = check_page(report_html)
    assert check.problems() == []
    assert check.answers_visible and check.answers_top is not None and check.answers_top < LAPTOP[1]
    assert check.images >= 4 and check.toc_links >= 3
    assert check.scroll_width <= check.viewport_width == LAPTOP[0]


@needs_chromium
def test_the_check_catches_a_broken_page(tmp_path: Path, report_html: Path) -> None:
    page = report_html.read_text()
    broken = page.replace('id="answers"', 'id="answers" style="display:none"', 1)
    broken = broken.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    broken = broken.replace("</body>", '<div style="width:3000px">wide</div></body>')
    (tmp_path / "broken.html").write_text(broken)
    problems = check_page(tmp_path / "broken.html").problems()
    assert len(problems) == 3
    assert problems[0] == "the answers section is not visible" and "did not load" in problems[1]
    assert problems[2].startswith("the page is ") and "px wide in a 1366 px window" in problems[2]


@needs_chromium
def test_a_screenshot_of_the_first_screen(tmp_path: Path, report_html: Path) -> None:
    from matplotlib import image as mpimg

    png = screenshot(report_html, tmp_path / "first.png")
    img = mpimg.imread(png)
    assert img.shape[:2] == (LAPTOP[1], LAPTOP[0]) and img[..., :3].std() > 0.05


def test_a_page_whose_check_never_ran_is_an_error() -> None:
    from coldstart_bench.analyse.report.browser import BrowserError

    with pytest.raises(BrowserError, match="check did not run"):
        parse_record("<html><body>no record</body></html>")
