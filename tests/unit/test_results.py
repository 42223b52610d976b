"""The typed, versioned result model: summary.json round-trips, carries declared metadata, and an
unknown version is refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_samples import thesis_run

from coldstart_bench.analyse.run import AnalysisConfig, analyse, write_report
from coldstart_bench.results import (
    SUMMARY_VERSION,
    EnvironmentRecord,
    ResultFormatError,
    RunResult,
    load_result,
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    samples = thesis_run(n=12)
    env = EnvironmentRecord(kernel="6.1", cpu_count=2, command="pytest bench/")
    analysis = analyse(samples, env, AnalysisConfig(bootstrap_resamples=100, plan={"seed": 5, "order": []}))
    write_report(run_dir, samples, analysis)
    return run_dir


def test_summary_has_a_version_and_each_scenario_its_declared_metadata(written: Path) -> None:
    data = json.loads((written / "summary.json").read_text())
    assert data["version"] == SUMMARY_VERSION == 3
    socket = data["scenarios"]["socket"]["declared"]
    assert socket["family"] == "thesis" and socket["mode"] == "socket" and socket["runtime"] == "runc"
    assert socket["references"][0] == {
        "scenario": "direct",
        "role": "headline",
        "findings": socket["references"][0]["findings"],
    }
    assert data["scenarios"]["direct-50ms"]["declared"]["delay_series"] == "direct"
    assert data["plan"] == {"seed": 5, "order": []}
    assert data["environment"] == {"kernel": "6.1", "cpu_count": 2, "command": "pytest bench/"}


def test_load_round_trips(written: Path) -> None:
    result = load_result(written)
    assert isinstance(result, RunResult) and result.version == SUMMARY_VERSION
    assert result.scenarios["direct"].ok == 12 and result.scenarios["direct"].metrics["lifecycle_ms"]["n"] == 12
    assert result.environment.kernel == "6.1" and result.environment.cpu_count == 2
    assert result.to_dict() == json.loads((written / "summary.json").read_text())


@pytest.mark.parametrize("version", [99, 0, "2", None, True])
def test_an_unknown_version_is_refused_naming_it(tmp_path: Path, version: object) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"version": version, "scenarios": {}}))
    with pytest.raises(ResultFormatError, match=rf"summary version {json.dumps(version)!s}|version {version!r}"):
        load_result(path)


def test_version_1_files_still_load_without_declared_metadata(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(
        json.dumps({"version": 1, "scenarios": {"socket": {"n": 3, "ok": 3, "failed": 0, "lifecycle_ms": {"n": 3}}}})
    )
    result = load_result(tmp_path)
    assert result.version == 1 and result.scenarios["socket"].declared == {}


def test_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "summary.json"
    bad.write_text("{not json")
    with pytest.raises(ResultFormatError, match="not valid JSON"):
        load_result(bad)
    bad.write_text(json.dumps({"version": 2, "scenarios": {"socket": {"ok": 1}}}))
    with pytest.raises(ResultFormatError, match="lacks 'n'"):
        load_result(bad)
    with pytest.raises(ResultFormatError, match="cannot read"):
        load_result(tmp_path / "missing.json")


def test_environment_record_keeps_unknown_keys_and_drops_unset() -> None:
    rec = EnvironmentRecord.from_dict({"kernel": "6.1", "from_a_newer_writer": 1})
    rec.steal_pct = 0.5
    assert rec.to_dict() == {"kernel": "6.1", "steal_pct": 0.5, "from_a_newer_writer": 1}
    assert rec.get("kernel") == "6.1" and rec.get("nope", "x") == "x"


def test_the_loader_needs_neither_pytest_nor_docker(written: Path) -> None:
    code = (
        "import sys\n"
        "from coldstart_bench.results import load_result\n"
        f"r = load_result({str(written)!r})\n"
        "assert 'pytest' not in sys.modules and 'docker' not in sys.modules, sorted(sys.modules)\n"
        "print(len(r.scenarios))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=repo)
    assert out.stdout.strip() == "5"


def test_the_report_states_the_plan(tmp_path: Path) -> None:
    from coldstart_bench.catalogue import default_catalogue
    from coldstart_bench.options import ExternalPg
    from coldstart_bench.plan import PlanSettings, plan

    cat = default_catalogue()
    p = plan(
        PlanSettings(iterations=12, seed=3, pg_external=ExternalPg("h", 1, "u", "d", tmp_path)),
        [cat.by_id(s) for s in ("socket", "direct", "pg-direct-10ms")],
    )
    samples = thesis_run(n=12, scenarios=("socket", "direct"))
    analysis = analyse(samples, {}, AnalysisConfig(bootstrap_resamples=50, plan=p.to_dict()))
    write_report(tmp_path, samples, analysis)
    md = (tmp_path / "report.md").read_text()
    assert f"Planned {p.cold_starts} cold starts" in md and "seed 3" in md
    assert "pg-direct-10ms skipped: the SYN-ACK delay needs the database container" in md
