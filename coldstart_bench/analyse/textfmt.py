"""How numbers and p-values are written in verdicts, gate lines and reports (one style everywhere)."""

from __future__ import annotations

import math
from typing import Any


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def value(x: Any, missing: str = "n/a") -> str:
    """123.4 for large values, four significant digits below 100."""
    if _missing(x):
        return missing
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.4g}"


def pvalue(p: Any, missing: str = "n/a") -> str:
    """Two significant digits; scientific below 0.001 so tiny p-values stay readable."""
    if _missing(p):
        return missing
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def percent_change(x: Any, missing: str = "n/a") -> str:
    return missing if _missing(x) else f"{x * 100:+.1f}%"
