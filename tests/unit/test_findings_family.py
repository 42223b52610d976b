"""The statistics wired into a run: findings judged as one family, the A/A control, the
lower-variance estimator and sample-size plans in summary.json, the refused two-level slope, and the
re-analysis of a saved run directory. No Docker: synthetic samples."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from synthetic_samples import scenario_samples, thesis_run

from coldstart_bench.analyse.reanalyse import main as reanalyse_main
from coldstart_bench.analyse.reanalyse import reanalyse
from coldstart_bench.analyse.run import AnalysisConfig, analyse
from coldstart_bench.results import SUMMARY_VERSION
from coldstart_bench.samples import Sample, write_samples_csv

REPO = Path(__file__).resolve().parents[2]
FAMILY_FIELDS = ("significant", "p_value", "p_adjusted", "ci_adjusted", "confidence_adjusted", "estimator")
# What a sentence may only say when its finding is significant.
CLAIM = re.compile(r"\b(saves|costs|faster|slower|adds|takes [0-9.]+× as long)\b")


def unsupported_claims(findings: Iterable[Mapping[str, Any]]) -> list[str]:
    """Texts of findings that are not significant yet state an effect as fact."""
    return [f["text"] for f in findings if not f.get("significant") and CLAIM.search(f["text"])]


def _blocked(samples: list[Sample], size: int) -> list[Sample]:
    """Give the samples interleaved block numbers (i // size), as an interleaved run would."""
    for s in samples:
        s.block = s.iteration // size
    return samples


def _aa_run(n: int = 60, seed: int = 3) -> list[Sample]:
    samples = thesis_run(n, seed=seed, scenarios=("socket", "direct"))
    samples += scenario_samples("direct-aa", n, 951.0, 353.0, sigma_life=0.03, seed=seed * 100 + 7)
    return _blocked(samples, 5)


@pytest.fixture(scope="module")
def aa_summary() -> dict[str, Any]:
    return analyse(_aa_run(), {"command": "pytest bench/"}, AnalysisConfig(bootstrap_resamples=100)).summary


def test_every_finding_carries_its_family_wise_judgement(aa_summary: dict[str, Any]) -> None:
    findings = aa_summary["findings"]
    assert aa_summary["version"] == SUMMARY_VERSION
    k = aa_summary["family"]["size"]
    assert k == len(findings) >= 5
    for f in findings:
        assert all(key in f for key in FAMILY_FIELDS), f
        assert f["confidence_adjusted"] == pytest.approx(1 - 0.05 / k)
    located = [f for f in findings if f["ci_adjusted"] is not None]
    assert located and all(f["significant"] == (not (f["ci_adjusted"][0] <= 0 <= f["ci_adjusted"][1])) for f in located
                           if f["unit"] == "ms")  # fmt: skip


def test_the_a_a_control_is_a_finding_and_passes_on_identical_arms(aa_summary: dict[str, Any]) -> None:
    aa = [f for f in aa_summary["findings"] if f["kind"] == "control"]
    assert len(aa) == 1 and aa[0]["scenarios"] == ["direct-aa", "direct"]
    assert not aa[0]["significant"] and "not distinguishable" in aa[0]["text"] and "check passed" in aa[0]["text"]
    assert not any(g["rule"] == "aa_significant" for g in aa_summary["warning_groups"])


def test_a_significant_a_a_comparison_warns_that_the_machine_is_unstable() -> None:
    samples = thesis_run(60, seed=4, scenarios=("socket", "direct"))
    samples += scenario_samples("direct-aa", 60, 951.0, 420.0, sigma_life=0.03, seed=99)  # drifted "twin"
    summary = analyse(_blocked(samples, 5), {}, AnalysisConfig(bootstrap_resamples=100)).summary
    aa = next(f for f in summary["findings"] if f["kind"] == "control")
    assert aa["significant"] and "check failed" in aa["text"]
    group = next(g for g in summary["warning_groups"] if g["rule"] == "aa_significant")
    assert group["scenarios"] == ["direct-aa"] and "not stable enough" in group["line"]


def test_no_finding_that_is_not_significant_claims_an_effect(aa_summary: dict[str, Any]) -> None:
    # socket and direct differ by 15 ms on a 10 ms spread: at n = 6 only the connect speed-up is clear.
    small = analyse(thesis_run(6, seed=1), {}, AnalysisConfig(bootstrap_resamples=50)).summary
    for summary in (aa_summary, small):
        assert unsupported_claims(summary["findings"]) == []
    assert any(not f["significant"] and "not distinguishable" in f["text"] for f in small["findings"])


def test_the_rule_holds_on_the_committed_baseline() -> None:
    """Real output: the baseline's summary.json (the thesis scenarios at n = 1000)."""
    summary = json.loads((REPO / "reports" / "baseline" / "summary.json").read_text())
    assert summary["findings"] and all(all(k in f for k in FAMILY_FIELDS) for f in summary["findings"])
    assert unsupported_claims(summary["findings"]) == []


def test_the_wording_check_catches_a_claim() -> None:
    assert unsupported_claims([{"significant": False, "text": "Injection saves 45.7 ms per cold start"}])
    assert not unsupported_claims([{"significant": True, "text": "Injection saves 45.7 ms per cold start"}])


def test_a_slope_through_two_delay_levels_is_refused_and_says_why() -> None:
    summary = analyse(
        thesis_run(20, scenarios=("socket", "direct", "direct-50ms")), {}, AnalysisConfig(bootstrap_resamples=50)
    ).summary
    slope = next(f for f in summary["findings"] if f["topic"] == "delay")
    assert (
        slope["significant"] is False
        and "at least 3 delay levels" in slope["text"]
        and "2 (0 ms, 50 ms)" in slope["text"]
    )
    assert summary["delay_fit"]["lifecycle_ms"]["slope"] is None and "refused" in summary["delay_fit"]["lifecycle_ms"]
    three = analyse(thesis_run(20), {}, AnalysisConfig(bootstrap_resamples=50)).summary
    fitted = next(f for f in three["findings"] if f["topic"] == "delay")
    assert fitted["significant"] and fitted["levels"] == [0.0, 10.0, 50.0, 100.0]


def test_start_to_die_is_reported_beside_the_lifecycle_with_the_engine_phase_check(aa_summary: dict[str, Any]) -> None:
    topics = {f["topic"] for f in aa_summary["findings"]}
    assert {"injection", "injection-start-to-die"} <= topics
    effects = aa_summary["effects"]
    assert effects["side_by_side"][0]["scenarios"] == ["direct", "socket"]
    assert "On start→die" in effects["side_by_side"][0]["text"]
    pairs = [(c["a"], c["b"]) for c in effects["engine_phases"]]
    assert ("direct", "socket") in pairs and ("direct-aa", "direct") in pairs
    # Synthetic create/destroy are fixed shares of the lifecycle, which differs: the check must say so.
    assert effects["engine_phases_differ"] is True


def test_sample_size_plan_uses_the_connection_saving_and_the_family_alpha(aa_summary: dict[str, Any]) -> None:
    plans = aa_summary["planning"]
    assert {p["metric"] for p in plans} == {"lifecycle_ms", "start_to_die_ms"}
    k = aa_summary["family"]["size"]
    socket = aa_summary["scenarios"]["socket"]["connect_us"]["median"]
    direct = aa_summary["scenarios"]["direct"]["connect_us"]["median"]
    for p in plans:
        assert p["alpha"] == pytest.approx(0.05 / k)
        assert p["difference"] == pytest.approx((direct - socket) / 1000.0)
        assert p["cold_starts_per_arm"] > 0 and "cold starts per arm" in p["sentence"]
    assert {p["design"] for p in plans} == {"two-sample", "paired-blocks"}


def test_a_stopped_run_judges_its_headline_findings_with_the_confidence_sequence() -> None:
    samples = _blocked(thesis_run(150, seed=5, scenarios=("socket", "direct")), 5)
    stopping = {
        "rule": {"min_blocks": 20, "target_blocks": 100},
        "stop_reason": "precision_reached",
        "headline": [{"name": "socket − direct lifecycle_ms", "a": "socket", "b": "direct", "metric": "lifecycle_ms"}],
    }
    summary = analyse(samples, {}, AnalysisConfig(bootstrap_resamples=50, stopping=stopping)).summary
    saving = next(f for f in summary["findings"] if f["topic"] == "injection")
    assert "confidence sequence" in saving["estimator"] and saving["n"] == {"blocks": 30}
    assert saving["confidence_adjusted"] == pytest.approx(1 - 0.05 / summary["family"]["size"])
    assert summary["stopping"]["stop_reason"] == "precision_reached"
    fixed = analyse(samples, {}, AnalysisConfig(bootstrap_resamples=50)).summary
    fixed_saving = next(f for f in fixed["findings"] if f["topic"] == "injection")
    width = saving["ci_adjusted"][1] - saving["ci_adjusted"][0]
    assert width > fixed_saving["ci_adjusted"][1] - fixed_saving["ci_adjusted"][0]  # the price of stopping at will


def test_a_version_1_run_directory_is_re_analysed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    samples = _blocked(thesis_run(25, seed=2), 10)
    write_samples_csv(run / "samples.csv", samples)
    old = {
        "version": 1,
        "scenarios": {},
        "environment": {"command": "pytest bench/ --bench-iterations 25"},
        "analysis": {"alpha": 0.05, "bootstrap_resamples": 50},
        "findings": [{"text": "Injection saves 45.7 ms"}],
    }
    (run / "summary.json").write_text(json.dumps(old))
    _analysis, written = reanalyse(run, out_dir=tmp_path / "out")
    out = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert out["version"] == SUMMARY_VERSION and out["analysis"]["reanalysed"]["original_summary_version"] == 1
    assert all("significant" in f for f in out["findings"]) and out["environment"]["command"].startswith("pytest")
    assert (tmp_path / "out" / "samples.csv").read_text() == (run / "samples.csv").read_text()
    assert {p.name for p in written} >= {"summary.json", "report.md", "report.html", "samples.csv"}
    assert "Findings" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((run / "summary.json").read_text()) == old  # the original is untouched
    assert reanalyse_main([str(run), "--out", str(tmp_path / "again")]) == 0
    assert capsys.readouterr().out.startswith("[coldstart-bench] 5 scenarios, 125 measured cold starts")
    assert reanalyse_main([str(tmp_path / "missing")]) == 2
