"""Writing report files so a failure never leaves half a file and always names the path."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class ReportWriteError(OSError):
    """A report or baseline file could not be written; `path` names it, `written` lists what was."""

    def __init__(self, message: str, path: Path, written: list[Path] | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.written = list(written or [])

    def __str__(self) -> str:
        return str(self.args[0])


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write to a temporary sibling, then rename: an existing file is replaced whole or not at all
    (a full disk leaves the previous version, never a truncated one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = exc.strerror or str(exc)
        raise ReportWriteError(f"cannot write {path}: {reason}", path) from exc
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportWriteError(f"cannot create directory {path}: {exc.strerror or exc}", path) from exc
    if not os.access(path, os.W_OK):
        raise ReportWriteError(f"cannot write into {path}: permission denied", path)
    return path
