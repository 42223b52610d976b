"""Re-analyse a saved run: its samples.csv and summary.json in, a fresh summary.json and report out,
with this version's statistics (e.g. a run made before findings were judged as a family).

The raw samples are the data; the old summary contributes only what the samples cannot tell: the
environment (machine, command, interleaved order), the plan, the analysis settings (alpha, seed) and
a stopping rule's record. Gate results are not carried over: a gate judges a run against a baseline
at the time it ran.

    python3 -m coldstart_bench.analyse.reanalyse RUN_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from ..catalogue import Catalogue, default_catalogue
from ..results import SUMMARY_FILE, load_result
from ..samples import read_samples_csv
from .analysis import RunAnalysis
from .baseline import SAMPLES_FILE
from .expectations import parse_expectation
from .run import AnalysisConfig, analyse, write_report


def reanalyse(
    run_dir: Path,
    *,
    out_dir: Path | None = None,
    catalogue: Catalogue | None = None,
    bootstrap_resamples: int | None = None,
) -> tuple[RunAnalysis, list[Path]]:
    """Analyse `run_dir`'s samples again; write summary.json, plots and reports to `out_dir` (default:
    `run_dir` itself, replacing them; samples.csv is copied when `out_dir` differs). Returns the analysis
    and the files written. ResultFormatError / OSError name the file that could not be read."""
    run_dir = Path(run_dir)
    samples_path = run_dir / SAMPLES_FILE
    if not samples_path.is_file():
        raise FileNotFoundError(f"{samples_path}: no samples to re-analyse")
    samples = read_samples_csv(samples_path)
    if not samples:
        raise ValueError(f"{samples_path} holds no samples")
    old = load_result(run_dir / SUMMARY_FILE)
    catalogue = catalogue or default_catalogue()
    present = list(dict.fromkeys(s.scenario for s in samples))
    settings = old.analysis
    config = AnalysisConfig(
        alpha=float(settings.get("alpha", 0.05)),
        # The cold-start test brings the catalogue's expectations about the scenarios that ran.
        expectations=[parse_expectation(t) for t in catalogue.expectations(present)],
        expectation_policy=str(settings.get("expectation_policy", "report")),
        bootstrap_resamples=int(bootstrap_resamples or settings.get("bootstrap_resamples", 2000)),
        seed=int(settings.get("seed", 12345)),
        catalogue=catalogue,
        plan=old.plan,
        stopping=old.stopping,
    )
    analysis = analyse(samples, old.environment, config)
    analysis.result.analysis["reanalysed"] = {
        "from": str(run_dir),
        "original_summary_version": old.version,
        "note": "re-analysed from samples.csv; gate results of the original run are not carried over",
    }
    target = Path(out_dir) if out_dir is not None else run_dir
    written = write_report(target, samples, analysis)
    if target.resolve() != run_dir.resolve():
        written.append(Path(shutil.copyfile(samples_path, target / SAMPLES_FILE)))
    return analysis, written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m coldstart_bench.analyse.reanalyse",
        description="Re-render a run directory's summary.json and report from its samples.csv and summary.json.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="write here instead of replacing the run's files")
    args = parser.parse_args(argv)
    try:
        analysis, written = reanalyse(args.run_dir, out_dir=args.out)
    except (OSError, ValueError) as exc:
        print(f"coldstart-bench: {exc}", file=sys.stderr)
        return 2
    from .report.terminal import render

    for line in render(analysis):
        print(line)
    print(f"\nwrote {len(written)} files to {args.out or args.run_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
