"""A baseline is a saved run: a directory holding that run's `samples.csv` and `summary.json`.

Any run directory (`reports/<timestamp>/`, `reports/latest`) is therefore a valid baseline too.
The relative gate compares raw samples (a rank test needs them); summary.json is kept so people
can read what the baseline was without re-running the analysis.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..samples import SAMPLE_FIELDS, Sample, read_samples_csv, write_samples_csv
from .report.files import ReportWriteError, ensure_dir, write_text_atomic
from .stats import values_by_scenario

if TYPE_CHECKING:
    from .analysis import RunAnalysis

SAMPLES_FILE = "samples.csv"
SUMMARY_FILE = "summary.json"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "scenario",
    "iteration",
    "mode",
    "container_id",
    "ok",
    "connect_us",
    "lifecycle_ms",
)


class BaselineError(ValueError):
    """The baseline cannot be used; the message names the path and what to do."""


@dataclass
class Baseline:
    path: Path
    samples: list[Sample]
    summary: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, dict[str, np.ndarray]]:
        return values_by_scenario(self.samples)

    @property
    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(s.scenario for s in self.samples))


def save_baseline(path: Path, samples: Sequence[Sample], analysis: RunAnalysis | None = None) -> None:
    """Write `path/samples.csv` and `path/summary.json` (the directory is created).
    Raises ReportWriteError (an OSError) naming the path that could not be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ReportWriteError(f"cannot save a baseline to {path}: it exists and is not a directory", path)
    ensure_dir(path)
    target = path / SAMPLES_FILE
    try:
        write_samples_csv(target, samples)
    except OSError as exc:
        raise ReportWriteError(f"cannot write {target}: {exc.strerror or exc}", target) from exc
    summary = analysis.summary if analysis is not None else {}
    write_text_atomic(path / SUMMARY_FILE, json.dumps(summary, indent=2, allow_nan=False) + "\n")


def load_baseline(path: Path) -> Baseline:
    """Load a baseline directory (or a samples.csv file directly). BaselineError when it is
    missing, unreadable or empty, naming the path and how to create one."""
    path = Path(path)
    hint = "create one with --bench-save-baseline PATH, or point at a run directory such as reports/latest"
    if path.is_dir():
        directory, samples_path = path, path / SAMPLES_FILE
    elif path.is_file():
        directory, samples_path = path.parent, path
    else:
        raise BaselineError(f"baseline {path} does not exist; {hint}")
    if not samples_path.is_file():
        raise BaselineError(f"baseline {path} has no {SAMPLES_FILE}; {hint}")
    try:
        with samples_path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise BaselineError(
                f"baseline {samples_path} is not a samples file: missing column(s) {', '.join(missing)}"
                f" (expected a header with {', '.join(SAMPLE_FIELDS[:7])}, ...)"
            )
        samples = read_samples_csv(samples_path)
    except BaselineError:
        raise
    except (OSError, ValueError, TypeError, KeyError, csv.Error, UnicodeDecodeError) as exc:
        raise BaselineError(f"baseline {samples_path} is unreadable or corrupt: {exc}; {hint}") from exc
    if not samples:
        raise BaselineError(f"baseline {samples_path} holds no samples; {hint}")
    summary: dict[str, Any] = {}
    summary_path = directory / SUMMARY_FILE
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BaselineError(f"baseline {summary_path} is unreadable or corrupt: {exc}") from exc
        if not isinstance(summary, dict):
            raise BaselineError(f"baseline {summary_path} is not a JSON object")
    return Baseline(path=path, samples=samples, summary=summary)
