"""`coldstart-bench report|show|compare` on stored runs, without Docker: re-rendering gives the same
files, show prints the end-of-run summary, compare gives the gate's verdict and exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from synthetic_samples import scenario_samples, thesis_run

from coldstart_bench import cli
from coldstart_bench.analyse.baseline import load_baseline
from coldstart_bench.analyse.expectations import parse_expectation
from coldstart_bench.analyse.gate import parse_gate_rules
from coldstart_bench.analyse.run import AnalysisConfig, report_run, terminal_lines
from coldstart_bench.catalogue import default_catalogue
from coldstart_bench.results import READABLE_VERSIONS, SUMMARY_VERSION, EnvironmentRecord
from coldstart_bench.samples import Sample, write_samples_csv
from coldstart_bench.userscenarios import load_scenario_file, register_user_scenarios

REPO = Path(__file__).resolve().parents[2]
REDIS = REPO / "examples" / "redis" / "scenarios.toml"
BASELINE = REPO / "reports" / "baseline"


def _environment() -> EnvironmentRecord:
    env = EnvironmentRecord()
    env.update({"run_id": "abc", "started_utc": "2026-12-01T10:00:00+00:00", "command": "pytest bench/", "x": 1})
    return env


def make_run(
    directory: Path, samples: list[Sample], *, baseline: Path | None = None, bootstrap: int = 200
) -> AnalysisConfig:
    """A run directory as the plugin's end of run leaves it (samples.csv written as measured)."""
    catalogue = default_catalogue()
    register_user_scenarios(catalogue, load_scenario_file(REDIS))
    config = AnalysisConfig(
        expectations=[parse_expectation(t) for t in catalogue.expectations(["socket", "direct"])],
        gate_rules=parse_gate_rules("socket.connect_us.median <= 5000\nfallback.connect_us.median <= 1"),
        baseline=load_baseline(baseline) if baseline is not None else None,
        max_regression=0.2,
        bootstrap_resamples=bootstrap,
        catalogue=catalogue,
        plan={"interleave": True, "seed": 7},
        deselected={"fallback"},
    )
    directory.mkdir(parents=True)
    write_samples_csv(directory / "samples.csv", samples)
    report = report_run(directory, samples, _environment(), config)
    assert report.write_error is None and report.written
    return config


def _samples(seed: int = 0, direct_connect: float = 951.0) -> list[Sample]:
    out = thesis_run(n=12, seed=seed, scenarios=("socket", "direct", "direct-10ms"))
    out = [s for s in out if s.scenario != "direct"]
    out += scenario_samples("direct", 12, direct_connect, 353.0, seed=seed + 50)
    # Run order differs from id order (interleaved blocks): findings must not depend on it.
    out += scenario_samples("redis-socket-nonet", 12, 120.0, 350.0, mode="socket", seed=seed + 80)
    out += scenario_samples("redis-direct", 12, 900.0, 500.0, seed=seed + 60)
    out += scenario_samples("redis-socket", 12, 150.0, 400.0, mode="socket", seed=seed + 70)
    return out


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_report_rewrites_the_same_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    make_run(run, _samples())
    before = _files(run)
    assert {"samples.csv", "summary.json", "report.md", "report.html", "family_thesis_forest.png"} <= set(before)
    for name in list(before):
        if name != "samples.csv":
            (run / name).unlink()  # rendered again from samples.csv and summary.json alone
    (run / "summary.json").write_bytes(before["summary.json"])
    assert cli.main(["report", str(run)]) == cli.EXIT_OK
    assert "files rewritten" in capsys.readouterr().out
    after = _files(run)
    assert after.keys() == before.keys()
    for name, data in before.items():
        assert after[name] == data, f"{name} differs after re-rendering"
    summary = json.loads(after["summary.json"])
    assert summary["scenarios"]["redis-socket"]["declared"]["family"] == "user"  # known without the file
    assert any("redis" in f["topic"] for f in summary["findings"])
    md = after["report.md"].decode()
    assert md.split("\n## ")[1].startswith("Answers") and "## Family: user" in md


def test_report_picks_up_a_changed_description(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, _samples())
    changed = tmp_path / "scenarios.toml"
    ex = REDIS.parent
    changed.write_text(
        REDIS.read_text()
        .replace('build = "server"', f'build = "{ex}/server"')
        .replace('build = "function"', f'build = "{ex}/function"')
    )
    assert cli.main(["report", str(run), "--scenarios", str(changed)]) == cli.EXIT_OK
    declared = json.loads((run / "summary.json").read_text())["scenarios"]["redis-socket"]["declared"]
    assert declared["description"] == f"from {changed}"


def test_show_prints_what_the_end_of_the_run_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    samples = _samples()
    config = make_run(run, samples)
    analysis = report_run(None, samples, _environment(), config).analysis
    assert cli.main(["show", str(run)]) == cli.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("run abc: 2026-12-01T10:00:00+00:00")
    assert out[1:] == terminal_lines(analysis, report_path=str(run / "report.html"))
    assert out[1].startswith("[coldstart-bench] ") and any(line.startswith("  redis-socket vs ") for line in out)
    # -v: the long form, findings first (significant first), then the raw table
    assert cli.main(["show", "-v", str(run)]) == cli.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == terminal_lines(analysis, verbose=True)
    assert any(line.startswith("scenario") for line in out) and any(line.startswith("redis-socket ") for line in out)
    assert "GATE SKIP fallback connect_us median" in "\n".join(out)


@pytest.mark.parametrize("regressed", [False, True])
def test_compare_reproduces_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str], regressed: bool) -> None:
    base, run = tmp_path / "base", tmp_path / "run"
    make_run(base, _samples(seed=1))
    make_run(run, _samples(seed=2, direct_connect=951.0 * (2.0 if regressed else 1.0)), baseline=base)
    gate = [g for g in json.loads((run / "summary.json").read_text())["gate"] if g["kind"] == "baseline"]
    assert gate and any(not g["passed"] for g in gate) == regressed
    status = cli.main(["compare", str(base), str(run)])
    out = capsys.readouterr().out.splitlines()
    assert status == (cli.EXIT_REGRESSION if regressed else cli.EXIT_OK)
    assert "max regression +20%" in out[0]  # the run's own --bench-max-regression
    assert out[1 : 1 + len(gate)] == [g["line"] for g in gate]
    if regressed:
        assert any(line.startswith("GATE FAIL direct connect_us") for line in out)
    # A looser limit passes the same runs.
    assert cli.main(["compare", str(base), str(run), "--max-regression", "500%"]) == cli.EXIT_OK


V1_RUN = Path(__file__).resolve().parents[1] / "data" / "baseline-v1"  # the n = 20 baseline of version 1


def test_a_version_1_run_stays_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads((V1_RUN / "summary.json").read_text())["version"] == 1
    assert cli.main(["show", str(V1_RUN)]) == cli.EXIT_OK
    assert "socket-nonet" in capsys.readouterr().out
    assert cli.main(["compare", str(V1_RUN), str(V1_RUN)]) == cli.EXIT_OK
    assert "GATE OK socket connect_us median" in capsys.readouterr().out
    copy = tmp_path / "baseline"
    shutil.copytree(V1_RUN, copy)
    assert cli.main(["report", str(copy)]) == cli.EXIT_OK
    rewritten = json.loads((copy / "summary.json").read_text())
    assert rewritten["version"] == SUMMARY_VERSION and (copy / "report.html").is_file()
    original = json.loads((V1_RUN / "summary.json").read_text())
    assert rewritten["gate"] == original["gate"]
    assert [v["status"] for v in rewritten["verdicts"]] == [v["status"] for v in original["verdicts"]]
    md = (copy / "report.md").read_text()  # the current layout: answers first, a section per family
    assert md.split("\n## ")[1].startswith("Answers")
    assert "| connection faster? | TCP | socket vs direct |" in md and "## TCP: the thesis's scenarios" in md
    assert (copy / "family_thesis_forest.png").is_file()


def test_the_committed_baseline_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads((BASELINE / "summary.json").read_text())["version"] in READABLE_VERSIONS
    assert cli.main(["show", str(BASELINE)]) == cli.EXIT_OK
    assert "direct-100ms" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["report"], ["show"], ["compare", "reports/baseline"]])
def test_a_missing_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    assert cli.main([*command, str(tmp_path / "nope")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("coldstart-bench: ") and "nope" in err


def test_a_newer_summary_version_is_refused_with_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    make_run(run, _samples())
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "version": 99}))
    assert cli.main(["report", str(run)]) == cli.EXIT_USAGE
    assert "summary version 99" in capsys.readouterr().err


def test_recorded_metadata_gives_back_the_catalogue_entry() -> None:
    from coldstart_bench.analyse.stored import scenario_from_declared

    catalogue = default_catalogue()
    register_user_scenarios(catalogue, load_scenario_file(REDIS))
    for scenario in catalogue:
        assert scenario_from_declared(json.loads(json.dumps(scenario.declared()))) == scenario, scenario.id
