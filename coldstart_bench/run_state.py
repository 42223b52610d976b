"""State of one benchmark run: where its files go, the samples measured so far, the environment."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .samples import Sample, append_sample_csv, write_samples_csv


class ReportWriteError(OSError):
    pass


def new_run_dir(report_root: Path, now: datetime | None = None) -> Path:
    """reports/<UTC timestamp>/ plus a `latest` link to it; a clear error if the root is unusable."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    try:
        report_root.mkdir(parents=True, exist_ok=True)
        run_dir = report_root / stamp
        suffix = 1
        while run_dir.exists():  # two runs in the same second
            run_dir = report_root / f"{stamp}-{suffix}"
            suffix += 1
        run_dir.mkdir()
        link = report_root / "latest"
        tmp_link = report_root / f".latest-{os.getpid()}"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        tmp_link.symlink_to(run_dir.name)
        tmp_link.replace(link)  # atomic: `latest` never points nowhere
    except OSError as exc:
        raise ReportWriteError(
            f"cannot create the report directory under {report_root}: {exc.strerror or exc}. "
            "Choose another place with --bench-report-dir DIR."
        ) from exc
    return run_dir


@dataclass
class RunState:
    report_root: Path
    run_id: str
    run_dir: Path | None = None
    samples: list[Sample] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    write_errors: list[str] = field(default_factory=list)

    def ensure_dir(self) -> Path:
        if self.run_dir is None:
            self.run_dir = new_run_dir(self.report_root)
        return self.run_dir

    @property
    def samples_path(self) -> Path:
        return self.ensure_dir() / "samples.csv"

    def add(self, sample: Sample) -> None:
        """Keep the sample in memory and on disk at once, so a crash loses nothing measured."""
        self.samples.append(sample)
        try:
            append_sample_csv(self.samples_path, sample)
        except OSError as exc:
            msg = f"could not append to {self.samples_path}: {exc.strerror or exc}"
            if msg not in self.write_errors:
                self.write_errors.append(msg)

    def rescue_samples(self) -> Path | None:
        """If samples.csv could not be written, write all samples somewhere that can take them."""
        if not self.write_errors or not self.samples:
            return None
        candidates = [self.samples_path] if self.run_dir else []
        candidates.append(Path(tempfile.mkdtemp(prefix=f"coldstart-bench-rescue-{self.run_id}-")) / "samples.csv")
        for path in candidates:
            try:
                write_samples_csv(path, self.samples)
                return path
            except OSError:
                continue
        return None
