"""End of a run: statistics, verdicts, gate, report files and the terminal summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .options import BenchOptions
from .run_state import RunState

if TYPE_CHECKING:
    from .analyse.baseline import Baseline
    from .analyse.expectations import Expectation
    from .analyse.gate import GateRule
    from .catalogue import Catalogue
    from .plan import Plan


@dataclass
class AnalysisInputs:
    """What the plugin parsed and validated up front (configure, collection), used once at the end."""

    gate_rules: list[GateRule]
    max_regression: float
    baseline: Baseline | None
    expectations: list[Expectation] = field(default_factory=list)
    deselected: set[str] = field(default_factory=set)  # gate rules' scenarios that -k/-m deselected


def finish_run(
    state: RunState,
    opts: BenchOptions,
    inputs: AnalysisInputs,
    catalogue: Catalogue | None = None,
    plan: Plan | None = None,
    *,
    stopping: dict[str, Any] | None = None,
    verbose: bool = False,
) -> tuple[list[str], bool]:
    """Returns the terminal lines and whether the run must fail (gate, or expectations under 'fail')."""
    from .analyse.baseline import save_baseline
    from .analyse.run import AnalysisConfig, report_run, terminal_lines

    lines: list[str] = []
    rescued = state.rescue_samples()
    for err in state.write_errors:
        lines.append(f"WARNING: {err}")
    if rescued is not None:
        lines.append(f"WARNING: all {len(state.samples)} samples were saved to {rescued} instead")
    config = AnalysisConfig(
        alpha=opts.alpha,
        expectations=inputs.expectations,
        expectation_policy=opts.expectation_policy,
        gate_rules=inputs.gate_rules,
        baseline=inputs.baseline,
        max_regression=inputs.max_regression,
        plan=plan.to_dict() if plan is not None else None,
        deselected=set(inputs.deselected),
        unsupported=[{"scenario": sid, "reason": why} for sid, why in state.unsupported.items()],
        stopping=stopping,
    )
    if catalogue is not None:
        config.catalogue = catalogue
    run_dir = state.run_dir
    report = report_run(run_dir, state.samples, state.environment, config)
    analysis = report.analysis
    if report.write_error is not None:
        lines.append(f"WARNING: report not (fully) written to {run_dir}: {report.write_error}; samples.csv is kept")
    report_path = ""
    if report.write_error is None and run_dir is not None:
        report_path = str(run_dir / "report.html")  # report.md, summary.json, samples.csv beside it
    if opts.save_baseline is not None:
        try:
            save_baseline(opts.save_baseline, state.samples, analysis)
            lines.append(f"baseline saved to {opts.save_baseline}")
        except OSError as exc:
            lines.append(f"WARNING: baseline not saved to {opts.save_baseline}: {exc}")
    lines[:0] = terminal_lines(analysis, verbose=verbose, report_path=report_path)
    return lines, analysis.failed
