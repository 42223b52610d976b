"""End of a run: statistics, verdicts, gate, report files and the terminal summary."""

from __future__ import annotations

from .options import BenchOptions
from .run_state import RunState


def finish_run(state: RunState, opts: BenchOptions, expectation_texts: list[str]) -> tuple[list[str], bool]:
    """Returns the terminal lines and whether the run must fail (gate, or expectations under 'fail')."""
    from .analysis import AnalysisConfig, analyse, terminal_lines, write_report
    from .baseline import load_baseline, save_baseline
    from .expectations import parse_expectation
    from .gate import parse_gate_rules, parse_max_regression

    lines: list[str] = []
    rescued = state.rescue_samples()
    for err in state.write_errors:
        lines.append(f"WARNING: {err}")
    if rescued is not None:
        lines.append(f"WARNING: all {len(state.samples)} samples were saved to {rescued} instead")
    if state.interleave is not None:
        state.environment["interleave"] = state.interleave
    config = AnalysisConfig(
        alpha=opts.alpha,
        expectations=[parse_expectation(t) for t in expectation_texts],
        expectation_policy=opts.expectation_policy,
        gate_rules=parse_gate_rules(opts.gate_text),
        baseline=load_baseline(opts.baseline) if opts.baseline else None,
        max_regression=parse_max_regression(opts.max_regression_text),
    )
    analysis = analyse(state.samples, state.environment, config)
    run_dir = state.run_dir
    if run_dir is not None:
        try:
            written = write_report(run_dir, state.samples, analysis)
            lines.append(f"report: {run_dir} ({len(written)} files; samples.csv, summary.json, report.md, ...)")
        except OSError as exc:
            lines.append(f"WARNING: report not (fully) written to {run_dir}: {exc}; samples.csv is kept")
    if opts.save_baseline is not None:
        try:
            save_baseline(opts.save_baseline, state.samples, analysis)
            lines.append(f"baseline saved to {opts.save_baseline}")
        except OSError as exc:
            lines.append(f"WARNING: baseline not saved to {opts.save_baseline}: {exc}")
    lines.extend(terminal_lines(analysis))
    return lines, analysis.failed
