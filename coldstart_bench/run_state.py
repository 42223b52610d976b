"""State of one benchmark run: where its files go, the samples measured so far, the environment."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .results import EnvironmentRecord
from .samples import Sample, append_sample_csv, write_samples_csv


class ReportWriteError(OSError):
    pass


def check_report_root(report_root: Path) -> None:
    """Raise ReportWriteError unless run directories can be made under `report_root`: it is a
    writable directory, or the nearest part of it that exists is. Creates nothing."""
    probe = report_root
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    hint = "Choose another place with --bench-report-dir DIR."
    if not probe.is_dir():
        raise ReportWriteError(
            f"cannot create the report directory under {report_root}: {probe} is not a directory. {hint}"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ReportWriteError(
            f"cannot create the report directory under {report_root}: {probe} is not writable. {hint}"
        )


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
    environment: EnvironmentRecord = field(default_factory=EnvironmentRecord)
    notes: list[str] = field(default_factory=list)
    unsupported: dict[str, str] = field(default_factory=dict)  # scenario id -> why its runtime cannot run it
    write_errors: list[str] = field(default_factory=list)
    notify: Callable[[str], None] | None = None  # told at once where samples go when a write fails
    rescue_path: Path | None = None  # where samples go once the run directory failed

    def ensure_dir(self) -> Path:
        if self.run_dir is None:
            self.run_dir = new_run_dir(self.report_root)
        return self.run_dir

    @property
    def samples_path(self) -> Path:
        return self.ensure_dir() / "samples.csv"

    def _error(self, message: str) -> None:
        if message not in self.write_errors:
            self.write_errors.append(message)
            if self.notify is not None:
                self.notify(f"[coldstart-bench] WARNING: {message}")

    def add(self, sample: Sample) -> None:
        """Keep the sample in memory and on disk at once, so a crash loses nothing measured. When the
        run directory cannot take it, every sample so far goes to a rescue file, and the run says where."""
        self.samples.append(sample)
        if self.rescue_path is not None:
            try:
                append_sample_csv(self.rescue_path, sample)
                return
            except OSError as exc:
                self._error(f"could not append to {self.rescue_path}: {exc.strerror or exc}")
                self.rescue_path = None
                return
        target: Path | str = self.report_root
        try:
            target = self.samples_path
            append_sample_csv(target, sample)
        except OSError as exc:
            self._error(f"could not append to {target}: {exc.strerror or exc}")
            self.rescue_path = self._write_rescue()
            if self.rescue_path is not None:
                self._error(f"samples measured so far, and those still to come, are kept in {self.rescue_path}")

    def _write_rescue(self) -> Path | None:
        try:
            path = Path(tempfile.mkdtemp(prefix=f"coldstart-bench-rescue-{self.run_id}-")) / "samples.csv"
            write_samples_csv(path, self.samples)
        except OSError:
            return None
        return path

    def rescue_samples(self) -> Path | None:
        """If samples.csv could not be written, write all samples somewhere that can take them."""
        if not self.write_errors or not self.samples:
            return None
        if self.rescue_path is not None:
            try:
                write_samples_csv(self.rescue_path, self.samples)
                return self.rescue_path
            except OSError:
                pass
        candidates = [self.run_dir / "samples.csv"] if self.run_dir else []
        candidates.append(Path(tempfile.mkdtemp(prefix=f"coldstart-bench-rescue-{self.run_id}-")) / "samples.csv")
        for path in candidates:
            try:
                write_samples_csv(path, self.samples)
                return path
            except OSError:
                continue
        return None
