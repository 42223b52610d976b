"""The two plots of each scenario family: a forest plot of its answers (effect and family-wise
interval per comparison, on one axis per unit) and the distributions of just its scenarios (ECDF
of the connection time, box plot of the lifecycle, ordered by median)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ...samples import Sample, group_by_scenario
from .answers import Answer, answers, family_order
from .plots import _colors, _maybe_log, _no_data, _png

_VERDICT_COLOURS = {"yes": "#1a7f37", "no": "#cf222e", "passed": "#1a7f37", "FAILED": "#cf222e"}
_SHORT = {
    "connect_speedup": "connect",
    "run_phase_saving": "start→die",
    "lifecycle_saving": "lifecycle",
    "burst_scaling": "burst",
    "delay_slope": "slope",
    "predictability": "variance",
    "control": "A/A",
}


def slug(family: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", family.lower()).strip("-") or "other"


def forest_file(family: str) -> str:
    return f"family_{slug(family)}_forest.png"


def distribution_file(family: str) -> str:
    return f"family_{slug(family)}_distribution.png"


def _panel(ax: Any, rows: Sequence[Answer], log: bool, xlabel: str, null: float) -> None:
    ys = np.arange(len(rows))
    for y, a in zip(ys, rows, strict=True):
        colour = _VERDICT_COLOURS.get(a.verdict, "#6e7781")
        if a.ci is not None:
            ax.plot(a.ci, [y, y], color=colour, linewidth=2.2, solid_capstyle="butt")
        if a.estimate is not None:
            ax.plot([a.estimate], [y], marker="o", color=colour, markersize=6)
    ax.axvline(null, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(ys, [f"{a.pair} · {_SHORT.get(a.kind, a.kind)}" for a in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)


def forest(family_answers: Sequence[Answer], title: str) -> bytes:
    """Ratios (speed-ups, burst ratios) on a log axis, differences in ms on a linear one; green a
    significant answer in the asked direction, red against it, grey not distinguishable."""
    ratios = [a for a in family_answers if a.unit == "x" and a.estimate is not None]
    diffs = [a for a in family_answers if a.unit == "ms" and a.estimate is not None]
    panels = [p for p in ((ratios, True), (diffs, False)) if p[0]]
    rows = sum(len(p[0]) for p in panels)
    fig = Figure(figsize=(8, 1.2 + 0.32 * max(rows, 1) + 0.5 * len(panels)))
    if not panels:
        _no_data(fig.add_subplot(), "no answer with an estimate in this family")
        return _png(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=[max(len(p[0]), 1) for p in panels])
    for ax, (rows_, is_ratio) in zip(axes[:, 0], panels, strict=True):
        if is_ratio:
            _panel(ax, rows_, True, "ratio: reference ÷ arm (> 1: the arm is faster)", 1.0)
        else:
            _panel(ax, rows_, False, "difference in ms: arm − reference (< 0: the arm is shorter)", 0.0)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def distribution(samples: Sequence[Sample], names: Sequence[str], title: str) -> bytes:
    """ECDF of connect_us and box plot of lifecycle_ms for the family's scenarios only."""
    groups = {k: g for k, g in group_by_scenario(samples).items() if k in names}
    fig = Figure(figsize=(10, 0.9 + max(3.2, 0.34 * len(groups))))
    left, right = fig.subplots(1, 2, width_ratios=[1, 1])
    colors = _colors(list(groups))
    series = []
    for name, group in groups.items():
        ys = np.sort(np.asarray(group.values("connect_us"), dtype=float))
        if ys.size:
            left.step(ys, np.arange(1, ys.size + 1) / ys.size, where="post", label=name, color=colors[name])
            series.append(ys)
    if series:
        _maybe_log(left, series, axis="x")
        left.set_xlabel("connect (µs)", fontsize=9)
        left.set_ylabel("fraction of cold starts ≤ x", fontsize=9)
        left.legend(fontsize=7)
        left.grid(True, alpha=0.3)
    else:
        _no_data(left, "no connection times")
    left.set_title("ECDF of the connection time", fontsize=9)
    boxes = [(k, np.asarray(g.values("lifecycle_ms"), dtype=float)) for k, g in groups.items()]
    boxes = sorted(((k, v) for k, v in boxes if v.size), key=lambda kv: float(np.median(kv[1])))
    if boxes:
        right.boxplot(
            [v for _, v in boxes],
            orientation="horizontal",
            tick_labels=[k for k, _ in boxes],
            showmeans=True,
            whis=1.5,
            flierprops={"markersize": 3},
        )
        right.invert_yaxis()
        right.tick_params(axis="y", labelsize=8)
        right.set_xlabel("lifecycle (ms)", fontsize=9)
        right.grid(True, axis="x", alpha=0.3)
    else:
        _no_data(right, "no lifecycles")
    right.set_title("lifecycle, shortest median first", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def family_members(summary: Mapping[str, Any]) -> dict[str, list[str]]:
    """Scenario ids per family, in run order (families in report order)."""
    from .answers import family_of

    members: dict[str, list[str]] = {}
    for sid in summary.get("scenarios") or {}:
        members.setdefault(family_of(summary, sid), []).append(sid)
    return {f: members[f] for f in family_order(list(members))}


def iter_family_plots(samples: Sequence[Sample], summary: Mapping[str, Any]) -> Iterator[tuple[str, bytes]]:
    from .answers import family_title

    found = answers(summary)
    for family, names in family_members(summary).items():
        mine = [a for a in found if a.family == family]
        if mine:
            yield forest_file(family), forest(mine, f"{family_title(family)}: effects with family-wise intervals")
        yield distribution_file(family), distribution(samples, names, family_title(family))
