"""What the report needs to know about each scenario, read from the metadata summary.json carries
(`declared`, from the catalogue) instead of from the scenario's id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def declared(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    return entry.get("declared") or {}


def is_burst(entry: Mapping[str, Any]) -> bool:
    """A point of a burst curve (N cold starts at once): plotted and tabled on its own."""
    return bool(declared(entry).get("burst_series"))


def diff_reference(name: str, scenarios: Mapping[str, Any]) -> str | None:
    ref = declared(scenarios[name]).get("diff_reference") or None
    return ref if ref in scenarios else None


def thesis_pair(scenarios: Mapping[str, Any]) -> tuple[str, str] | None:
    """(injected, direct): the pair set beside the thesis's own figures, if both ran."""
    role = {declared(e).get("thesis_role"): name for name, e in scenarios.items()}
    if "injected" in role and "direct" in role:
        return role["injected"], role["direct"]
    return None


def primary_reference(scenarios: Mapping[str, Any]) -> str:
    """The injected scenario the Diff row is named after: the thesis's, else the first declared one."""
    pair = thesis_pair(scenarios)
    if pair:
        return pair[0]
    refs = [declared(e).get("diff_reference") for e in scenarios.values() if declared(e).get("diff_reference")]
    return str(refs[0]) if refs else "reference"


def burst_points(scenarios: Mapping[str, Any]) -> dict[str, list[tuple[int, str]]]:
    """{curve label: [(N, scenario), ...]} sorted by N."""
    out: dict[str, list[tuple[int, str]]] = {}
    for name, entry in scenarios.items():
        label = declared(entry).get("burst_series")
        if label:
            out.setdefault(str(label), []).append((int(declared(entry).get("burst") or entry.get("burst") or 1), name))
    return {k: sorted(v) for k, v in out.items()}


def delay_plot_members(summary: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(direct points, injected contrast) of the lifecycle-vs-delay plot: the primary delay fit's
    members (or, with no fit, the thesis direct scenario's delay series), and the injected
    single-start scenarios that share the fit's reference and take the socket path."""
    scenarios = summary.get("scenarios", {})
    fit = summary.get("delay_fit", {}).get("lifecycle_ms")
    if fit:
        members = [s for s in fit["scenarios"] if s in scenarios]
        series = declared(scenarios[members[0]]).get("delay_series") if members else None
    else:
        pair = thesis_pair(scenarios)
        series = declared(scenarios[pair[1]]).get("delay_series") if pair else None
        members = [n for n, e in scenarios.items() if series and declared(e).get("delay_series") == series]
    refs = {declared(scenarios[m]).get("diff_reference") for m in members} - {None, ""}
    contrast = []
    for name, entry in scenarios.items():
        d = declared(entry)
        if name in members or is_burst(entry) or d.get("mode") != "socket":
            continue
        if (d.get("expect_path") or d.get("mode")) == "socket" and d.get("diff_reference") in refs:
            contrast.append(name)
    return members, contrast


def plot_members(summary: Mapping[str, Any]) -> dict[str, list[str]]:
    """Which scenarios each plot draws (a plot may draw fewer: those without data)."""
    scenarios = summary.get("scenarios", {})
    single = [n for n, e in scenarios.items() if not is_burst(e)]
    direct, contrast = delay_plot_members(summary)
    return {
        "connect_per_iteration.png": single,
        "lifecycle_per_iteration.png": single,
        "ecdf_connect.png": single,
        "box_lifecycle.png": list(scenarios),
        "lifecycle_vs_delay.png": [n for n in scenarios if n in direct or n in contrast],
        "phases.png": list(scenarios),
        "burst.png": [name for points in burst_points(scenarios).values() for _, name in points],
    }
