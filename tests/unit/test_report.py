from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib import image as mpimg
from synthetic_samples import scenario_samples, thesis_run

from coldstart_bench.analyse import report as report_pkg
from coldstart_bench.analyse.expectations import parse_expectation
from coldstart_bench.analyse.gate import parse_gate_rules
from coldstart_bench.analyse.report import html, markdown
from coldstart_bench.analyse.report.content import Bullets, Document, Heading, Image, Para, Table
from coldstart_bench.analyse.report.files import ReportWriteError
from coldstart_bench.analyse.run import AnalysisConfig, RunAnalysis, analyse, terminal_lines, write_report
from coldstart_bench.samples import Sample, write_samples_csv

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = (
    "connect_per_iteration.png",
    "lifecycle_per_iteration.png",
    "ecdf_connect.png",
    "box_lifecycle.png",
    "lifecycle_vs_delay.png",
    "phases.png",
)


def quick_config(**kw: object) -> AnalysisConfig:
    return AnalysisConfig(bootstrap_resamples=100, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def run_samples() -> list[Sample]:
    samples = thesis_run(n=20)
    for n in (1, 4):
        samples += scenario_samples(f"burst-{n}-direct", 8, 951, 353 * (1 + 0.2 * n), burst=n, seed=n)
        samples += scenario_samples(f"burst-{n}-socket-nonet", 8, 250, 300 * (1 + 0.2 * n), burst=n, seed=10 + n)
    return samples


@pytest.fixture(scope="module")
def analysis(run_samples: list[Sample]) -> RunAnalysis:
    config = quick_config(
        expectations=[parse_expectation("socket.connect_us.median <= direct.connect_us.median / 2")],
        gate_rules=parse_gate_rules("socket.connect_us.p50 <= 1\nsocket.lifecycle_ms.median <= 5000"),
    )
    return analyse(run_samples, {"cpu_count": 2, "command": "pytest bench/ -p no:xdist"}, config)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, run_samples: list[Sample], analysis: RunAnalysis) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    write_samples_csv(run_dir / "samples.csv", run_samples)
    write_report(run_dir, run_samples, analysis)
    return run_dir


def test_report_files_exist(written: Path) -> None:
    for name in ("samples.csv", "summary.json", "report.md", "report.html", *PLOTS, "burst.png"):
        assert (written / name).is_file(), name
    assert not list(written.glob(".*.tmp"))


@pytest.mark.parametrize("name", [*PLOTS, "burst.png"])
def test_plots_are_real_images(written: Path, name: str) -> None:
    data = (written / name).read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000  # data drawn, not an empty canvas
    img = mpimg.imread(written / name)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank image


def test_summary_json_is_strict_json(written: Path) -> None:
    def no_constants(token: str) -> None:
        raise AssertionError(f"non-JSON constant {token} in summary.json")

    summary = json.loads((written / "summary.json").read_text(), parse_constant=no_constants)
    assert set(summary["scenarios"]) >= {"socket", "direct", "direct-100ms", "burst-4-direct"}
    assert summary["verdicts"][0]["status"] == "pass"
    assert summary["gate"][0]["line"].startswith("GATE FAIL socket connect_us p50")


def test_markdown_report_content(written: Path) -> None:
    md = (written / "report.md").read_text()
    for text in (
        "Average ms (lifecycle)",
        "Diff ms vs socket",
        "Connect median µs",
        "Connect p95 µs",
        "Connect p99 µs",
        "## Findings",
        "## Expectations",
        "## Gate",
        "## Noise warnings",
        "## Comparisons",
        "## Phase attribution",
        "connection share",
        "## Bursts",
        "Produced by: `pytest bench/ -p no:xdist`",
        "GATE FAIL socket connect_us p50",
    ):
        assert text in md, text
    for name in (*PLOTS, "burst.png"):
        assert f"]({name})" in md
    assert "Injection saves" in md and "family-wise" in md


def test_html_is_self_contained(written: Path) -> None:
    page = (written / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOTS) + 1
    assert "<table>" in page and "http://" not in page and "https://" not in page


def test_terminal_lines(analysis: RunAnalysis) -> None:
    lines = terminal_lines(analysis)
    # The findings come first, significant ones before the rest, then the raw table.
    assert lines[0].startswith("findings (")
    marks = [line.split("]")[0] for line in lines[1:] if line.startswith("  [")]
    assert marks and marks == sorted(marks, key=lambda m: m != "  [significant")
    head = next(i for i, line in enumerate(lines) if line.startswith("scenario "))
    assert lines[head].split()[:3] == ["scenario", "n", "failed"]
    assert "connect_us median" in lines[head] and "lifecycle_ms median" in lines[head] and "p99" in lines[head]
    rows = {
        line.split()[0]: line for line in lines[head + 2 :] if line and line.split()[0] in analysis.summary["scenarios"]
    }
    assert set(rows) == set(analysis.summary["scenarios"])
    median = analysis.summary["scenarios"]["socket"]["connect_us"]["median"]
    assert f"{median:.1f}" in rows["socket"]
    assert any(line.startswith("EXPECT PASS: socket.connect_us.median") for line in lines)
    assert any(line.startswith("WARNING: too few samples for p99") for line in lines)
    assert lines[-2].startswith("GATE FAIL socket connect_us p50") and lines[-1].startswith("GATE OK")


def test_unwritable_report_dir_names_the_path(tmp_path: Path, run_samples: list[Sample], analysis: RunAnalysis) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ReportWriteError, match=str(blocker / "run")) as info:
        write_report(blocker / "run", run_samples, analysis)
    assert info.value.written == []


def test_full_disk_keeps_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_samples: list[Sample], analysis: RunAnalysis
) -> None:
    write_samples_csv(tmp_path / "samples.csv", run_samples)
    before = (tmp_path / "samples.csv").read_bytes()
    (tmp_path / "report.md").write_text("previous report")
    real = report_pkg.write_bytes_atomic

    def disk_full_after_summary(path: Path, data: bytes) -> Path:
        if path.name != "summary.json":
            raise ReportWriteError(f"cannot write {path}: No space left on device", path)
        return real(path, data)

    monkeypatch.setattr(report_pkg, "write_bytes_atomic", disk_full_after_summary)
    with pytest.raises(ReportWriteError, match=r"connect_per_iteration\.png: No space left on device") as info:
        write_report(tmp_path, run_samples, analysis)
    assert info.value.written == [tmp_path / "summary.json"]
    assert (tmp_path / "samples.csv").read_bytes() == before
    assert (tmp_path / "report.md").read_text() == "previous report"
    json.loads((tmp_path / "summary.json").read_text())


def test_atomic_write_failure_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from coldstart_bench.analyse.report.files import write_text_atomic

    target = tmp_path / "summary.json"
    target.write_text("old")

    def no_space(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ReportWriteError, match=f"cannot write {target}: No space left on device"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_renderers() -> None:
    doc = Document(
        "T",
        [
            Heading("H"),
            Para("a `b` **c**"),
            Bullets(["x|y"]),
            Table(["k", "v"], [["1", "<2>"]], "cap"),
            Image("p.png", "alt"),
        ],
    )
    md = markdown.render(doc)
    assert (
        md.startswith("# T\n") and "| k | v |" in md and "x|y" in md and "| 1 | <2> |" in md and "![alt](p.png)" in md
    )
    page = html.render(doc, {"p.png": b"\x89PNGxx"})
    assert "<code>b</code>" in page and "<b>c</b>" in page and "&lt;2&gt;" in page and "base64,iVBOR" in page
    assert '<a href="p.png">' in html.render(doc, {})


def test_subset_run_reports_without_crashing(tmp_path: Path) -> None:
    samples = scenario_samples("socket-nonet", 6, 250, 300, mode="socket")
    samples[0].ok = False
    broken = scenario_samples("socket", 3, 250, 300, mode="socket")
    for s in broken:
        s.ok, s.error = False, "pool unreachable"
    samples += broken
    a = analyse(
        samples, {"report_dir": tmp_path}, quick_config(gate_rules=parse_gate_rules("socket.connect_us.p50 <= 1"))
    )
    assert (
        a.summary["scenarios"]["socket"]["ok"] == 0 and a.summary["scenarios"]["socket"]["connect_us"]["median"] is None
    )
    assert a.gate_results[0].line() == (
        "GATE FAIL socket connect_us p50 observed=n/a limit<=1 (no successful samples with this metric)"
    )
    paths = write_report(tmp_path, samples, a)
    assert {p.name for p in paths} >= {"summary.json", "report.md", "report.html", *PLOTS}
    assert "burst.png" not in {p.name for p in paths}
    assert terminal_lines(a)[2].startswith("socket-nonet") and terminal_lines(a)[3].split()[:3] == ["socket", "0", "3"]


def test_thesis_comparison_table(written: Path) -> None:
    md = (written / "report.md").read_text()
    assert "## Against the thesis" in md
    row = next(line for line in md.splitlines() if line.startswith("| connect speed-up"))
    assert "| 3.66× |" in row
