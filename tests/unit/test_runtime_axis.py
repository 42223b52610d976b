"""Runtimes as an axis without Docker: the @runtime twins, the verdicts a probe leads to, and the
harness reporting unsupported scenarios (skipped with the reason, summary `unsupported`, never measured)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_plan_executor import FakeBenchmark, FakeRunner, FakeTestbed, _options

from coldstart_bench.analyse.report.content import build_document
from coldstart_bench.analyse.report.markdown import render
from coldstart_bench.analyse.run import AnalysisConfig, analyse
from coldstart_bench.catalogue import default_catalogue
from coldstart_bench.harness import Harness
from coldstart_bench.measure.runtime_axis import MISSING, UNSUPPORTED, RelayTotals, RuntimeSupport
from coldstart_bench.measure.runtimes import KNOWN_RUNTIMES, FdCheck, RuntimeProbe
from coldstart_bench.plan import PlanSettings, plan
from coldstart_bench.results import RunResult
from coldstart_bench.run_state import RunState

CAT = default_catalogue((1,), ("runc", "runsc"))
DROPPED = "the reply arrived without its fd (dropped on the way in)"


def runsc_support() -> RuntimeSupport:
    offered = {"runc": {"path": "runc"}, "runsc": dict(KNOWN_RUNTIMES["runsc"])}
    runc = RuntimeProbe("runc", True, True, FdCheck(True, True), FdCheck(True, True), registration=offered["runc"])
    runsc = RuntimeProbe(
        "runsc", True, True, FdCheck(False, False, DROPPED), FdCheck(True, True), registration=offered["runsc"]
    )
    return RuntimeSupport(offered, {"runc": runc, "runsc": runsc})


def test_twins_get_runtime_ids_and_compare_with_their_original() -> None:
    twin = CAT.by_id("socket-relay-nonet@runsc")
    assert (twin.name, twin.runtime, twin.handoff, twin.network) == ("socket-relay-nonet", "runsc", "relay", "none")
    refs = [r.scenario for r in twin.references]
    assert refs[0] == "socket-relay-nonet" and "socket-nonet@runsc" in refs
    assert twin.expectations == () and twin.delay_series == ""
    assert not any("@" in s.id for s in CAT if s.family == "burst")
    assert "socket-nonet@runsc" in CAT and "socket-relay@runsc" in CAT
    assert not any("@" in s.id for s in default_catalogue((1,)))  # runc only: no twins


def test_verdicts_follow_the_probe() -> None:
    support = runsc_support()
    kind, reason = support.verdict(CAT.by_id("socket-nonet@runsc")) or ("", "")
    assert kind == UNSUPPORTED and DROPPED in reason and "injected TCP fd" in reason
    assert support.verdict(CAT.by_id("socket-relay-nonet@runsc")) is None
    assert support.verdict(CAT.by_id("socket-nonet")) is None
    for sid in ("direct@runsc", "fallback@runsc"):  # the function would connect itself: no network there
        kind, reason = support.verdict(CAT.by_id(sid)) or ("", "")
        assert kind == UNSUPPORTED and "--network=none" in reason, sid
    crun = default_catalogue((1,), ("runc", "crun")).by_id("socket-nonet@crun")
    kind, reason = support.verdict(crun) or ("", "")
    assert kind == MISSING and '"crun"' in reason and "daemon.json" in reason


@dataclass
class ProbedTestbed(FakeTestbed):
    runtime_support: RuntimeSupport = field(default_factory=runsc_support)


def test_harness_reports_unsupported_and_measures_the_rest(tmp_path: Path) -> None:
    selected = ["socket-nonet", "socket-relay-nonet", "socket-nonet@runsc", "socket-relay-nonet@runsc"]
    settings = PlanSettings(3, 1, True, 2, 1, 7, runtimes=("runc", "runsc"))
    run_plan = plan(settings, [CAT.by_id(s) for s in selected])
    runner, testbed = FakeRunner(), ProbedTestbed()
    opts = _options(tmp_path, iterations=3, runtimes=("runc", "runsc"))
    state = RunState(tmp_path / "reports", "r1")
    harness = Harness(opts, state, run_plan, lambda _l: None, CAT, bring_up=lambda: (testbed, runner))
    skipped: dict[str, str] = {}
    for sid in selected:
        try:
            harness.run(sid, benchmark=FakeBenchmark())
        except pytest.skip.Exception as exc:
            skipped[sid] = str(exc)
    assert list(skipped) == ["socket-nonet@runsc"] and DROPPED in skipped["socket-nonet@runsc"]
    assert state.unsupported == {"socket-nonet@runsc": skipped["socket-nonet@runsc"].split(": ", 2)[2]}
    assert "socket-nonet@runsc" not in {s.scenario for s in state.samples}
    assert harness.progress.total == runner.runs == harness.progress.done  # the dropped blocks are not counted
    assert state.environment.to_dict()["runtime_probes"]["runsc"]["handoff"] == "relay"
    config = AnalysisConfig(
        catalogue=CAT, unsupported=[{"scenario": k, "reason": v} for k, v in state.unsupported.items()]
    )
    summary = analyse(state.samples, state.environment, config).summary
    assert summary["unsupported"][0]["scenario"] == "socket-nonet@runsc"
    assert RunResult.from_dict(summary).unsupported == summary["unsupported"]
    text = render(build_document(summary, []))
    assert "## Runtimes and relay" in text and "socket-nonet@runsc: runtime runsc does not deliver" in text


def test_a_runtime_not_selected_skips_its_scenarios() -> None:
    run_plan = plan(PlanSettings(2, runtimes=("runsc",)), [CAT.by_id("socket-nonet"), CAT.by_id("socket-nonet@runsc")])
    assert run_plan.ids == ["socket-nonet@runsc"] and "--bench-runtimes runsc" in run_plan.skip_reason("socket-nonet")


def test_relay_totals_sum_over_manager_restarts() -> None:
    totals = RelayTotals()
    one: dict[str, Any] = {"started": 2, "closed": 2, "bytes_a_to_b": 500_000, "bytes_b_to_a": 500_000, "cpu_s": 0.01}
    totals.add(one | {"zero_copy": True})
    totals.add(one)
    out = totals.as_dict()
    assert out["started"] == 4 and out["cpu_ms_per_mb"] == 10.0 and out["cpu_us_per_relay"] == 5000.0
    assert out["zero_copy"] is True
