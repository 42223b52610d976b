"""The ``coldstart-bench`` console script (also ``python3 -m coldstart_bench``).

Subcommands register in ``SUBCOMMANDS``: a name, a help line, a function adding its arguments
and a function running it (returning the exit status). Adding one is one entry.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the facts and family status as JSON")


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import gather, render, to_json

    facts = gather()
    print(to_json(facts) if args.json else "\n".join(render(facts)))
    return 0  # a report, not a gate: families that cannot run say so above


# Exit statuses of the commands that read stored runs (compare: like the gate under pytest).
EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2


def _error(message: str) -> int:
    print(f"coldstart-bench: {message}", file=sys.stderr)
    return EXIT_USAGE


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (samples.csv, summary.json)")
    parser.add_argument(
        "--scenarios",
        action="append",
        default=[],
        metavar="FILE",
        help="the scenario file(s) the run used, for their current descriptions (default: as recorded)",
    )


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .analyse.run import report_run
    from .analyse.stored import StoredRunError, analysis_config, catalogue_for, load_run
    from .userscenarios import ScenarioFileError, load_scenario_file, register_user_scenarios

    try:
        run = load_run(Path(args.run_dir))
        catalogue = None
        if args.scenarios:
            from .catalogue import default_catalogue

            catalogue = default_catalogue()
            for path in args.scenarios:
                register_user_scenarios(catalogue, load_scenario_file(path))
        config = analysis_config(run, catalogue_for(run.result, catalogue))
    except (StoredRunError, ScenarioFileError) as exc:
        return _error(str(exc))
    report = report_run(run.directory, run.samples, run.result.environment, config)
    for note in run.notes:
        print(f"WARNING: {note}")
    if report.write_error is not None:
        return _error(f"report not (fully) written to {run.directory}: {report.write_error}")
    print(f"report: {run.directory} ({len(report.written)} files rewritten from samples.csv and summary.json)")
    return EXIT_OK


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its summary.json)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="the long form: every finding, the table per scenario"
    )


def _show(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .analyse.report.terminal import render_result, render_short
    from .results import ResultFormatError, load_result

    try:
        result = load_result(Path(args.run_dir))
    except ResultFormatError as exc:
        return _error(str(exc))
    env = result.environment
    print(f"run {env.run_id or '?'}: {env.started_utc or '?'} .. {env.finished_utc or '?'} ({env.command or '?'})")
    path = Path(args.run_dir)
    report = path / "report.html" if path.is_dir() else path.with_name("report.html")
    lines = render_result(result) if args.verbose else render_short(result, report_path=str(report))
    print("\n".join(lines))
    return EXIT_OK


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base_dir", metavar="BASE_DIR", help="the baseline: a run directory (or its samples.csv)")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run compared with it")
    parser.add_argument(
        "--max-regression",
        default=None,
        metavar="PCT",
        help="smallest median change that counts as a regression (default: the run's --bench-max-regression)",
    )
    parser.add_argument(
        "--alpha", type=float, default=None, help="significance level (default: the run's bench_alpha, else 0.05)"
    )


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .analyse.gate import parse_max_regression
    from .analyse.stored import StoredRunError, compare_runs, samples_of
    from .results import ResultFormatError, load_result

    try:
        base, run = samples_of(Path(args.base_dir)), samples_of(Path(args.run_dir))
        recorded = load_result(Path(args.run_dir)).analysis if Path(args.run_dir).is_dir() else {}
    except (StoredRunError, ResultFormatError) as exc:
        return _error(str(exc))
    try:
        max_regression = (
            parse_max_regression(args.max_regression)
            if args.max_regression is not None
            else float(recorded.get("max_regression", 0.10))
        )
    except ValueError as exc:
        return _error(str(exc).replace("--bench-max-regression", "--max-regression"))
    alpha = args.alpha if args.alpha is not None else float(recorded.get("alpha", 0.05))
    if not 0 < alpha < 1:
        return _error(f"--alpha must be between 0 and 1, got {alpha}")
    comparison = compare_runs(base, run, max_regression=max_regression, alpha=alpha)
    print(f"{args.run_dir} against {args.base_dir} (max regression +{max_regression * 100:g}%, alpha {alpha:g})")
    print("\n".join(comparison.lines()))
    return EXIT_REGRESSION if comparison.failed else EXIT_OK


def _docs_arguments(parser: argparse.ArgumentParser) -> None:
    from .docs_reference import add_arguments

    add_arguments(parser)


def _docs(args: argparse.Namespace) -> int:
    from .docs_reference import run

    return run(args)


SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "doctor", "what this machine and engine offer; which scenario families can run", _doctor_arguments, _doctor
    ),
    Subcommand(
        "report",
        "re-render a stored run's report files (report.md, report.html, plots, summary.json) from its samples",
        _report_arguments,
        _report,
    ),
    Subcommand("show", "print a stored run's summary, as at the end of the run", _show_arguments, _show),
    Subcommand(
        "compare",
        "compare a run with a baseline run by the gate's rule; exit 1 on a significant regression",
        _compare_arguments,
        _compare,
    ),
    Subcommand(
        "docs",
        "regenerate docs/reference/ (options, scenarios, sample columns, summary fields) from the code",
        _docs_arguments,
        _docs,
    ),
]


def build_parser(subcommands: Sequence[Subcommand] = SUBCOMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coldstart-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in subcommands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args))
    except BrokenPipeError:  # `coldstart-bench show RUN | head`: the reader has what it wanted
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
