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
    "lifecycle_vs_delay.png",
    "phases.png",
    "family_thesis_forest.png",
    "family_thesis_distribution.png",
    "family_burst_distribution.png",
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
    assert md.split("\n## ")[1].startswith("Answers"), "the report opens with the answers"
    for text in (
        "| question | for | pair | effect | family-wise interval | verdict | rules out |",
        "| connection faster? | TCP | socket vs direct |",
        "## Gate and warnings",
        "## TCP: the thesis's scenarios",
        "## Bursts of concurrent cold starts",
        "## Appendix",
        "### Findings as sentences",
        "### Expectations",
        "### Comparisons (raw)",
        "### Phase attribution",
        "connection share",
        "Produced by: `pytest bench/ -p no:xdist`",
        "GATE FAIL socket connect_us p50",
    ):
        assert text in md, text
    for name in (*PLOTS, "burst.png"):
        assert f"]({name})" in md
    assert "Injection saves" in md and "family-wise" in md
    assert md.index("## Answers") < md.index("## TCP: the thesis's scenarios") < md.index("## Appendix")


def test_no_table_wider_than_ten_columns(written: Path) -> None:
    widths = [
        line.count(" | ") + 1 for line in (written / "report.md").read_text().splitlines() if line.startswith("| ")
    ]
    assert widths and max(widths) <= 10


def test_percentiles_only_where_n_supports_them(written: Path) -> None:
    md = (written / "report.md").read_text()
    family = md[md.index("## TCP: the thesis's scenarios") :]
    socket_row = next(line for line in family.splitlines() if line.startswith("| `socket` |"))
    assert socket_row.count("–¹") == 0  # n = 20: p95 is shown
    bursts = md[md.index("## Bursts of concurrent cold starts") :]
    burst_row = next(line for line in bursts.splitlines() if line.startswith("| `burst-4-direct` |"))
    assert burst_row.count("–¹") == 2  # n = 8: neither p95 is shown, the footnote says why
    assert "¹ not shown: too few successful cold starts" in bursts


def test_html_is_self_contained(written: Path) -> None:
    page = (written / "report.html").read_text()
    images = page.count('src="data:image/png;base64,')
    assert images == len(list(written.glob("*.png")))
    assert "<table>" in page and "http://" not in page and "https://" not in page
    assert '<nav class="toc"' in page and '<a href="#answers">Answers</a>' in page and '<section id="answers">' in page


def test_terminal_lines_long_form(analysis: RunAnalysis) -> None:
    lines = terminal_lines(analysis, verbose=True)
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


def test_terminal_lines_short_form(analysis: RunAnalysis) -> None:
    lines = terminal_lines(analysis, report_path="reports/x/report.html")
    assert lines[0].startswith("[coldstart-bench] 9 scenarios, 132 measured cold starts")
    assert lines[1].startswith("answers (family-wise")
    row = next(line for line in lines if line.startswith("  socket vs direct "))
    speedup = next(f for f in analysis.summary["findings"] if f["kind"] == "connect_speedup")
    assert f"yes {speedup['estimate']:.1f}×" in row
    assert "gate: FAILED (1 of 2 rules)" in lines
    assert any(x.startswith("GATE FAIL socket connect_us p50") for x in lines)
    assert any(line.startswith("expectations: 1 pass") for line in lines)
    assert any(line.startswith("warnings (") for line in lines)
    assert lines[-2] == "report: reports/x/report.html" and len(lines) <= 38


def test_terminal_short_form_fits_forty_lines_with_many_pairs() -> None:
    from coldstart_bench.analyse.report.terminal import MAX_LINES, render_short
    from coldstart_bench.results import RunResult

    finding = {"kind": "lifecycle_saving", "unit": "ms", "estimate": 5.0, "ci_adjusted": [-9.0, 20.0]}
    findings = [finding | {"scenarios": [f"direct-{i}", f"socket-{i}"], "significant": i % 7 == 0} for i in range(80)]
    warnings = [{"line": f"rule {i}: " + "x" * 300} for i in range(12)]
    result = RunResult.from_dict(
        {"version": 3, "scenarios": {}, "environment": {}, "findings": findings, "warning_groups": warnings}
    )
    lines = render_short(result, report_path="r/report.html")
    assert len(lines) <= MAX_LINES and lines[-2] == "report: r/report.html"
    assert any(line.startswith("  … ") and "more pairs (" in line for line in lines)
    assert sum(1 for line in lines if line.startswith("  socket-0 vs direct-0")) == 1  # significant ones kept
    assert all(len(line) <= 150 for line in lines)


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
    assert {p.name for p in paths} >= {"summary.json", "report.md", "report.html", *PLOTS[:4]}
    assert "burst.png" not in {p.name for p in paths}
    long_form = terminal_lines(a, verbose=True)
    assert long_form[2].startswith("socket-nonet") and long_form[3].split()[:3] == ["socket", "0", "3"]
    assert terminal_lines(a)[0].startswith("[coldstart-bench] 2 scenarios, 9 measured cold starts (4 failed)")


def test_thesis_comparison_table(written: Path) -> None:
    md = (written / "report.md").read_text()
    assert "### Against the thesis" in md
    row = next(line for line in md.splitlines() if line.startswith("| connect speed-up"))
    summary = json.loads((written / "summary.json").read_text())
    speedup = next(f for f in summary["findings"] if f["kind"] == "connect_speedup")["estimate"]
    assert "| 3.66× |" in row and f"| {speedup:.1f}× |" in row  # the Answers' speed-up, no second one
