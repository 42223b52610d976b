"""Report files of a run: summary.json, PNG plots, report.md and a self-contained report.html."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...samples import Sample
from .files import ReportWriteError, ensure_dir, write_bytes_atomic, write_text_atomic

__all__ = ["ReportWriteError", "write_all"]


def write_all(run_dir: Path, samples: Sequence[Sample], summary: Mapping[str, Any]) -> list[Path]:
    """Write summary.json first (the data matters most), then the plots, report.md and report.html.

    Stops at the first file that cannot be written and raises ReportWriteError naming it; what was
    written before stays (each file is replaced atomically), and samples.csv is never touched."""
    # Imported here: loading matplotlib is not worth paying when only gate or baseline code is needed.
    from . import html, markdown
    from .content import build_document
    from .family_plots import iter_family_plots
    from .plots import iter_plots

    written: list[Path] = []
    try:
        ensure_dir(run_dir)
        text = json.dumps(summary, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
        written.append(write_text_atomic(run_dir / "summary.json", text))
        plots: dict[str, bytes] = {}
        for name, data in itertools.chain(iter_plots(samples, summary), iter_family_plots(samples, summary)):
            written.append(write_bytes_atomic(run_dir / name, data))
            plots[name] = data
        doc = build_document(summary, list(plots))
        written.append(write_text_atomic(run_dir / "report.md", markdown.render(doc)))
        written.append(write_text_atomic(run_dir / "report.html", html.render(doc, plots)))
    except ReportWriteError as exc:
        exc.written = list(written)
        raise
    return written
