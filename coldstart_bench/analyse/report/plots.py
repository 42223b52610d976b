"""PNG plots of a run, rendered in memory with matplotlib's object API (no pyplot, no display):
headless, and safe next to any other matplotlib user in the process."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ...samples import Sample, group_by_scenario
from .declared import burst_points, delay_plot_members, plot_members

DPI = 110

# Stacked phases, in lifecycle order: (summary key, label).
PHASES: tuple[tuple[str, str], ...] = (
    ("create_to_start_ms", "create → start"),
    ("start_to_ready_ms", "start → ready"),
    ("connect_ms", "connection"),
    ("request_ms", "request"),
    ("rest_of_run_ms", "rest of run / exit"),
    ("die_to_destroy_ms", "die → destroy"),
)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


def _no_data(ax: Axes, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=10, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _maybe_log(ax: Axes, values: Sequence[np.ndarray], axis: str = "y") -> None:
    # Spread over more than ~1.5 decades (e.g. socket µs vs direct-100ms) is unreadable on a linear axis.
    allv = np.concatenate([v for v in values if v.size]) if any(v.size for v in values) else np.array([])
    pos = allv[allv > 0]
    if pos.size and pos.max() / pos.min() > 30:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _ok_series(samples: Sequence[Sample], metric: str) -> tuple[np.ndarray, np.ndarray]:
    ordered = sorted((s for s in samples if s.ok), key=lambda s: (s.iteration, s.t_create_ns))
    xs = np.array([s.iteration for s in ordered], dtype=float)
    ys = np.array([s.value(metric) for s in ordered], dtype=float)
    keep = np.isfinite(ys)
    return xs[keep], ys[keep]


def per_iteration(
    samples: Sequence[Sample], metric: str, title: str, ylabel: str, names: Sequence[str] | None = None
) -> bytes:
    """Thesis Figs. 5 and 6: each cold start's value in run order, one line per scenario (of `names`)."""
    groups = {k: g for k, g in group_by_scenario(samples).items() if names is None or k in names}
    fig = Figure(figsize=(9, 4.8))
    ax = fig.add_subplot()
    colors = _colors(list(groups))
    series = []
    for name, group in groups.items():
        xs, ys = _ok_series(group.samples, metric)
        if ys.size:
            ax.plot(xs, ys, marker="o", markersize=2.5, linewidth=0.9, label=name, color=colors[name])
            series.append(ys)
    if series:
        _maybe_log(ax, series)
        ax.legend(fontsize=8, ncol=2)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    else:
        _no_data(ax, f"no successful samples with {metric}")
    ax.set_title(title)
    return _png(fig)


def lifecycle_vs_delay(samples: Sequence[Sample], summary: Mapping[str, Any]) -> bytes:
    """Thesis Table 2 as a picture: lifecycle of each direct cold start against the configured
    SYN-ACK delay, the per-delay means and the least-squares line; injected scenarios for contrast."""
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    fit = summary.get("delay_fit", {}).get("lifecycle_ms")
    groups = group_by_scenario(samples)
    direct_members, contrast = delay_plot_members(summary)
    members = set(direct_members)
    rng = np.random.default_rng(0)  # jitter only spreads overlapping dots
    plotted = False
    for name, group in groups.items():
        direct = name in members
        if not direct and name not in contrast:
            continue
        ys = np.asarray(group.values("lifecycle_ms"), dtype=float)
        if not ys.size:
            continue
        delay = float(summary["scenarios"].get(name, {}).get("delay_ms") or 0.0)
        xs = delay + rng.uniform(-1.2, 1.2, ys.size)
        ax.scatter(xs, ys, s=9, alpha=0.45, marker="o" if direct else "x", color="tab:blue" if direct else "tab:orange")
        ax.scatter([delay], [ys.mean()], s=70, marker="D" if direct else "s", color="black", zorder=3)
        ax.annotate(name, (delay, ys.mean()), textcoords="offset points", xytext=(6, 6), fontsize=8)
        plotted = True
    if fit and fit.get("slope") is not None:
        xs = np.linspace(0, max(row["delay_ms"] or 0 for row in fit["table"]) * 1.05 + 1, 50)
        ci = fit.get("slope_ci") or [math.nan, math.nan]
        ax.plot(
            xs,
            fit["intercept"] + fit["slope"] * xs,
            color="tab:red",
            label=f"fit: {fit['intercept']:.1f} ms + {fit['slope']:.2f} × delay (slope 95% CI {ci[0]:.2f}–{ci[1]:.2f})",
        )
        ax.legend(fontsize=8)
    elif plotted:
        ax.text(
            0.02,
            0.96,
            "no fit: needs direct scenarios with at least two different delays",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
        )
    if plotted:
        ax.set_xlabel("configured SYN-ACK delay (ms)")
        ax.set_ylabel("lifecycle (ms, create → destroy)")
        ax.grid(True, alpha=0.3)
    else:
        _no_data(ax, "no direct or socket scenarios in this run")
    ax.set_title("Lifecycle vs configured handshake delay (dots: direct, crosses: injected, markers: means)")
    return _png(fig)


def phases(summary: Mapping[str, Any]) -> bytes:
    rows = [(name, entry.get("phases", {})) for name, entry in summary.get("scenarios", {}).items()]
    rows = [(n, p) for n, p in rows if any(_finite(p.get(k)) for k, _ in PHASES)]
    fig = Figure(figsize=(9, 1.2 + 0.45 * max(1, len(rows))))
    ax = fig.add_subplot()
    if rows:
        left = np.zeros(len(rows))
        from matplotlib import colormaps

        cmap = colormaps["Set2"]
        for i, (key, label) in enumerate(PHASES):
            widths = np.array([float(p.get(key)) if _finite(p.get(key)) else 0.0 for _, p in rows])
            ax.barh([n for n, _ in rows], widths, left=left, label=label, color=cmap(i))
            left += widths
        for y, (_, p) in enumerate(rows):
            share = p.get("connect_share")
            if _finite(share):
                ax.text(left[y], y, f"  connection {share:.1%}", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("mean time (ms)")
        ax.legend(fontsize=7, ncol=6, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        ax.margins(x=0.15)
    else:
        _no_data(ax, "no phase timings in this run")
    ax.set_title("Where the lifecycle goes (mean per phase)", pad=28)
    return _png(fig)


def burst(summary: Mapping[str, Any]) -> bytes | None:
    """Per-start lifecycle against the number of cold starts started at once, per mode."""
    series: dict[str, list[tuple[int, float, float, float]]] = {}
    scenarios = summary.get("scenarios", {})
    for label, curve in burst_points(scenarios).items():
        for n_at_once, name in curve:
            life = scenarios[name].get("lifecycle_ms", {})
            if life.get("median") is None:
                continue
            ci = life.get("ci_median") or [life["median"], life["median"]]
            series.setdefault(label, []).append((n_at_once, life["median"], ci[0], ci[1]))
    if not series:
        return None
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    for mode, points in sorted(series.items()):
        points.sort()
        n = np.array([p[0] for p in points])
        med = np.array([p[1] for p in points])
        err = np.array([[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]])
        ax.errorbar(n, med, yerr=np.clip(err, 0, None), marker="o", capsize=4, label=mode)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
    ax.get_xaxis().set_major_formatter("{x:.0f}")
    ax.set_xlabel("cold starts started at once (N)")
    ax.set_ylabel("lifecycle per cold start, median (ms)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("Bursts: per-start lifecycle vs N (bars: 95% CI of the median)")
    return _png(fig)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def iter_plots(samples: Sequence[Sample], summary: Mapping[str, Any]) -> Iterator[tuple[str, bytes]]:
    """(file name, PNG bytes) for every plot this run has data for, rendered one at a time so a
    caller can write each before drawing the next (burst.png only when bursts ran)."""
    members = plot_members(summary)
    yield (
        "connect_per_iteration.png",
        per_iteration(
            samples,
            "connect_us",
            "Connection time per cold start (thesis Fig. 5)",
            "connect (µs)",
            members["connect_per_iteration.png"],
        ),
    )
    yield (
        "lifecycle_per_iteration.png",
        per_iteration(
            samples,
            "lifecycle_ms",
            "Container lifecycle per cold start (thesis Fig. 6)",
            "lifecycle (ms)",
            members["lifecycle_per_iteration.png"],
        ),
    )
    # Distributions per family (family_plots.py, after these), not one ECDF of every scenario in the run.
    yield "lifecycle_vs_delay.png", lifecycle_vs_delay(samples, summary)
    yield "phases.png", phases(summary)
    b = burst(summary)
    if b is not None:
        yield "burst.png", b


def make_plots(samples: Sequence[Sample], summary: Mapping[str, Any]) -> dict[str, bytes]:
    return dict(iter_plots(samples, summary))
