from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic_samples import DESCRIBE_FIELDS, THESIS_LIKE, scenario_samples, thesis_run

from coldstart_bench.analyse.baseline import BaselineError, load_baseline, save_baseline
from coldstart_bench.analyse.expectations import parse_expectation
from coldstart_bench.analyse.gate import parse_gate_rules
from coldstart_bench.analyse.report.files import ReportWriteError
from coldstart_bench.analyse.run import AnalysisConfig, RunAnalysis, analyse, phase_attribution
from coldstart_bench.samples import Sample, write_samples_csv

FIELDS = DESCRIBE_FIELDS


def quick(**kw: object) -> AnalysisConfig:
    return AnalysisConfig(bootstrap_resamples=200, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return thesis_run(n=30)


@pytest.fixture(scope="module")
def result(samples: list[Sample]) -> RunAnalysis:
    return analyse(samples, {"kernel": "6.1", "cpu_count": 2}, quick())


def test_summary_shape(result: RunAnalysis) -> None:
    s = result.summary
    assert set(s) >= {
        "scenarios",
        "environment",
        "comparisons",
        "delay_fit",
        "verdicts",
        "gate",
        "warnings",
        "findings",
    }
    assert list(s["scenarios"]) == list(THESIS_LIKE)  # run order kept
    assert s["environment"] == {"kernel": "6.1", "cpu_count": 2}
    for name, entry in s["scenarios"].items():
        for metric in ("connect_us", "lifecycle_ms", "create_to_start_ms", "request_rtt_us"):
            assert all(f in entry[metric] for f in FIELDS), (name, metric)
        assert "resolve_us" not in entry  # never measured in these samples: left out
        assert entry["ok"] == 30 and entry["failed"] == 0 and entry["delay_ms"] == THESIS_LIKE[name][2]
        assert entry["paths"] == {THESIS_LIKE[name][3]: 30}
    json.dumps(s, allow_nan=False)


def test_statistics_match_numpy(samples: list[Sample], result: RunAnalysis) -> None:
    life = np.array([x.lifecycle_ms for x in samples if x.scenario == "direct-50ms"])
    d = result.summary["scenarios"]["direct-50ms"]["lifecycle_ms"]
    assert d["mean"] == pytest.approx(life.mean()) and d["variance"] == pytest.approx(life.var(ddof=1))
    assert d["p95"] == pytest.approx(np.percentile(life, 95)) and d["ci_median"][0] <= d["median"] <= d["ci_median"][1]


def test_comparisons(result: RunAnalysis) -> None:
    comps = {(c["a"], c["b"], c["metric"]): c for c in result.summary["comparisons"]}
    c = comps[("socket", "direct", "connect_us")]
    assert c["emphasis"] and c["ratio_median"] < 0.5 and c["ratio_median_ci"][1] < 0.5
    # The connection claim is the connect_speedup finding's: the row shows its verdict, not one of its own.
    assert c["significant"] and c["mannwhitney_p_holm"] is None and c["effect"] == "large"
    assert [j["kind"] for j in c["judged_by"]] == ["connect_speedup"]
    life = comps[("socket", "direct", "lifecycle_ms")]
    assert life["levene_mean_p"] < 0.05 and life["levene_median_p"] < 0.05  # socket steadier by construction
    # The variance claim is the predictability finding's (Brown–Forsythe, Holm over the findings).
    finding = next(f for f in result.summary["findings"] if f["kind"] == "predictability")
    assert life["levene_median_p_holm"] == finding["p_adjusted"] and life["levene_mean_p_holm"] is None
    other = comps[("direct-10ms", "direct", "lifecycle_ms")]
    assert other["levene_mean_p_holm"] >= other["levene_mean_p"] and "judged_by" not in other
    assert ("direct-10ms", "direct", "lifecycle_ms") in comps


def test_delay_fit_slope(result: RunAnalysis) -> None:
    fit = result.summary["delay_fit"]["lifecycle_ms"]
    means = [THESIS_LIKE[k][1] for k in ("direct", "direct-10ms", "direct-50ms", "direct-100ms")]
    expected = np.polyfit([0, 10, 50, 100], means, 1)[0]
    assert fit["slope_ci"][0] < expected < fit["slope_ci"][1]
    assert [row["scenario"] for row in fit["table"]] == [
        "socket",
        "direct",
        "direct-10ms",
        "direct-50ms",
        "direct-100ms",
    ]
    connect = result.summary["delay_fit"]["connect_us"]
    assert connect["slope_ci"][0] < 1000 < connect["slope_ci"][1]  # 1 ms of delay = 1000 µs of connect


def test_findings(result: RunAnalysis) -> None:
    topics = {f["topic"] for f in result.summary["findings"]}
    assert {"connection", "injection", "predictability", "delay"} <= topics
    injection = next(f for f in result.summary["findings"] if f["topic"] == "injection")
    assert injection["ci"][0] > 0 and "family-wise" in injection["text"] and "saves" in injection["text"]


def test_phase_attribution_adds_up() -> None:
    values = {
        "lifecycle_ms": np.array([100.0]),
        "create_to_start_ms": np.array([30.0]),
        "start_to_ready_ms": np.array([20.0]),
        "start_to_die_ms": np.array([60.0]),
        "die_to_destroy_ms": np.array([10.0]),
        "connect_us": np.array([5000.0]),
        "request_rtt_us": np.array([1000.0]),
    }
    p = phase_attribution(values)
    assert p["rest_of_run_ms"] == pytest.approx(34.0) and p["connect_share"] == pytest.approx(0.05)
    parts = (
        "create_to_start_ms",
        "start_to_ready_ms",
        "connect_ms",
        "request_ms",
        "rest_of_run_ms",
        "die_to_destroy_ms",
    )
    assert sum(p[k] for k in parts) == pytest.approx(100.0)


def test_deterministic(samples: list[Sample], result: RunAnalysis) -> None:
    assert analyse(samples, {"kernel": "6.1", "cpu_count": 2}, quick()).summary == result.summary


def test_failed_combines_gate_and_policy(samples: list[Sample]) -> None:
    worse = [parse_expectation("direct.connect_us.median < socket.connect_us.median (mannwhitney)")]
    assert not analyse(samples, {}, quick(expectations=worse)).failed
    assert analyse(samples, {}, quick(expectations=worse, expectation_policy="fail")).failed
    gated = analyse(samples, {}, quick(gate_rules=parse_gate_rules("socket.connect_us.p50 <= 1")))
    assert gated.failed and gated.gate_failed and not gated.expectations_failed


def test_subset_run(samples: list[Sample]) -> None:
    only = [s for s in samples if s.scenario == "direct-50ms"]
    exps = [parse_expectation("socket.connect_us.median <= direct.connect_us.median / 2")]
    a = analyse(only, {}, quick(expectations=exps, gate_rules=parse_gate_rules("socket.connect_us.p50 <= 1")))
    assert a.summary["comparisons"] == [] and a.summary["delay_fit"] == {} and a.summary["findings"] == []
    assert a.verdicts[0].status == "skipped" and not a.failed
    assert a.gate_results[0].skipped


def test_empty_run() -> None:
    a = analyse([], {}, quick())
    assert a.summary["scenarios"] == {} and not a.failed


# --- baseline ---------------------------------------------------------------


def test_baseline_round_trip_and_a_a(tmp_path: Path, samples: list[Sample], result: RunAnalysis) -> None:
    save_baseline(tmp_path / "base", samples, result)
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["samples.csv", "summary.json"]
    base = load_baseline(tmp_path / "base")
    assert len(base.samples) == len(samples) and base.scenarios == list(THESIS_LIKE)
    assert base.summary["scenarios"]["socket"]["ok"] == 30
    assert load_baseline(tmp_path / "base" / "samples.csv").samples == base.samples
    a = analyse(samples, {}, quick(baseline=base))
    lines = [g.line() for g in a.gate_results]
    assert len(lines) == 2 * len(THESIS_LIKE) and all(line.startswith("GATE OK") for line in lines)
    assert not a.failed and a.summary["analysis"]["baseline"] == str(tmp_path / "base")


def test_a_run_directory_is_a_baseline(tmp_path: Path, samples: list[Sample]) -> None:
    write_samples_csv(tmp_path / "samples.csv", samples)
    assert len(load_baseline(tmp_path).samples) == len(samples)


def test_baseline_regression_fails(tmp_path: Path) -> None:
    # The baseline ran at direct-10ms speed; the current run is as slow as direct-50ms.
    base = scenario_samples("direct", 20, 10_951, 365, delay_ms=10, seed=1)
    cur = scenario_samples("direct", 20, 50_951, 410, delay_ms=50, seed=2)
    save_baseline(tmp_path / "b", base)
    a = analyse(cur, {}, quick(baseline=load_baseline(tmp_path / "b"), max_regression=0.10))
    assert a.failed
    lines = [g.line() for g in a.gate_results]
    assert lines[0].startswith("GATE FAIL direct connect_us median observed=") and "limit=+10%" in lines[0]
    assert lines[1].startswith("GATE FAIL direct lifecycle_ms median")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "missing column"),
        ("a,b\n1,2\n", "missing column"),
        ("scenario,iteration,mode,container_id,ok,connect_us,lifecycle_ms\n", "holds no samples"),
        ("scenario,iteration,mode,container_id,ok,connect_us,lifecycle_ms\nx,notanint,direct,c,1,1,1\n", "corrupt"),
    ],
)
def test_bad_baselines_are_clear_errors(tmp_path: Path, content: str | None, message: str) -> None:
    target = tmp_path / "base"
    if content is not None:
        target.mkdir()
        (target / "samples.csv").write_text(content)
    with pytest.raises(BaselineError, match=message) as info:
        load_baseline(target)
    assert str(target) in str(info.value)


def test_baseline_dir_without_samples_and_corrupt_summary(tmp_path: Path, samples: list[Sample]) -> None:
    with pytest.raises(BaselineError, match=r"has no samples\.csv; create one with --bench-save-baseline"):
        load_baseline(tmp_path)
    save_baseline(tmp_path / "b", samples[:5])
    (tmp_path / "b" / "summary.json").write_text("{not json")
    with pytest.raises(BaselineError, match=r"summary\.json is unreadable or corrupt"):
        load_baseline(tmp_path / "b")


def test_save_baseline_over_a_file_is_a_clear_error(tmp_path: Path, samples: list[Sample]) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ReportWriteError, match="exists and is not a directory"):
        save_baseline(tmp_path / "f", samples)


def test_interleaved_run_gets_paired_block_differences(tmp_path: Path) -> None:
    samples = []
    for block in range(6):
        for name, (connect, life, delay, mode) in (
            ("socket", THESIS_LIKE["socket"]),
            ("direct", THESIS_LIKE["direct"]),
        ):
            for s in scenario_samples(name, 3, connect, life + 5 * block, delay_ms=delay, mode=mode, seed=block):
                s.block, s.iteration = block, block * 3 + s.iteration
                samples.append(s)
    a = analyse(samples, {}, quick())
    rows = {(r["a"], r["b"], r["metric"]): r for r in a.summary["paired_blocks"]}
    life = rows[("socket", "direct", "lifecycle_ms")]
    assert life["blocks"] == 6 and life["mean_diff"] < 0
    from coldstart_bench.analyse.run import write_report

    write_report(tmp_path, samples, a)
    assert "Paired differences per block" in (tmp_path / "report.md").read_text()


def test_all_failed_burst_scenarios_do_not_break_findings() -> None:
    samples = scenario_samples("burst-1-direct", 6, 951, 353, burst=1) + scenario_samples(
        "burst-4-direct", 6, 951, 500, burst=4, seed=2
    )
    for s in samples[:6]:
        s.ok = False
    a = analyse(samples, {}, quick())
    assert a.summary["findings"] == [] and a.summary["scenarios"]["burst-1-direct"]["ok"] == 0
