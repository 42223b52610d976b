"""What the report says, as a list of neutral blocks that markdown.py and html.py render.

Built only from summary.json content (plus plot file names), so a report can be re-rendered
from a saved summary without the samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..textfmt import pvalue
from .blocks import Bullets, Document, Heading, Image, Para, Table, num
from .declared import burst_points, diff_reference, is_burst, primary_reference, thesis_pair
from .judgement import (
    control_blocks,
    effects_blocks,
    family_para,
    finding_lines,
    planning_blocks,
    shift_cell,
    stopping_blocks,
    warning_lines,
)
from .plots import PHASES


def pval(p: Any) -> str:
    return pvalue(p, missing="–")


def ci(c: Any, digits: int = 2, unit: str = "") -> str:
    if not c or c[0] is None or c[1] is None:
        return "–"
    return f"[{c[0]:,.{digits}f}, {c[1]:,.{digits}f}]{unit}"


def table2(scenarios: Mapping[str, Any]) -> Table:
    """The thesis's Table 2, widened: a column per scenario, the lifecycle mean and its difference
    from the injected reference each scenario declares (socket, or pg-socket for PostgreSQL), then
    connect percentiles."""
    names = [n for n in scenarios if not is_burst(scenarios[n])]
    primary = primary_reference(scenarios)
    rows: list[list[str]] = [
        ["n (ok / failed)"] + [f"{scenarios[n]['ok']} / {scenarios[n]['failed']}" for n in names],
        ["Average ms (lifecycle)"] + [num(scenarios[n]["lifecycle_ms"]["mean"]) for n in names],
    ]
    diff = [f"Diff ms vs {primary}"]
    for n in names:
        ref = diff_reference(n, scenarios)
        mean, ref_mean = scenarios[n]["lifecycle_ms"]["mean"], scenarios[ref]["lifecycle_ms"]["mean"] if ref else None
        diff.append(
            num(mean - ref_mean) + (f" (vs {ref})" if ref != primary and n != ref else "")
            if mean is not None and ref_mean is not None
            else "–"
        )
    rows.append(diff)
    rows.append(["Lifecycle median ms"] + [num(scenarios[n]["lifecycle_ms"]["median"]) for n in names])
    rows.append(["Lifecycle p99 ms"] + [num(scenarios[n]["lifecycle_ms"]["p99"]) for n in names])
    rows.append(["Lifecycle variance ms²"] + [num(scenarios[n]["lifecycle_ms"]["variance"], 2) for n in names])
    rows.append(["Connect median µs"] + [num(scenarios[n]["connect_us"]["median"], 0) for n in names])
    rows.append(["Connect p95 µs"] + [num(scenarios[n]["connect_us"]["p95"], 0) for n in names])
    rows.append(["Connect p99 µs"] + [num(scenarios[n]["connect_us"]["p99"], 0) for n in names])
    rows.append(["Configured delay ms"] + [num(scenarios[n]["delay_ms"], 0) for n in names])
    return Table(
        ["", *names],
        rows,
        "Shaped like the thesis's Table 2 (Average ms, Diff ms vs socket), extended with medians, "
        "variance and connect percentiles.",
    )


# The thesis's own figures (AWS t3.micro, 1000 cold starts per scenario), to set beside a run.
THESIS: dict[str, tuple[float, float]] = {
    "connect_mean": (260.0, 951.0),
    "connect_p95": (333.0, 1283.0),
    "lifecycle_mean": (338.0, 353.0),
    "lifecycle_variance": (0.6, 3.21),
    "lifecycle_p99": (439.0, 514.0),
}
THESIS_LEVENE_P = 0.0055


def thesis_table(scenarios: Mapping[str, Any], comparisons: Sequence[Mapping[str, Any]]) -> Table | None:
    """The thesis's socket-vs-direct claims next to this run's values (same statistics: means where it
    used means), for the scenarios the catalogue declares as the thesis's pair."""
    names = thesis_pair(scenarios)
    if names is None:
        return None
    sock, direct = scenarios[names[0]], scenarios[names[1]]
    lev = next((c for c in comparisons if (c["a"], c["b"], c["metric"]) == (*names, "lifecycle_ms")), None)

    def pair(metric: str, stat: str, digits: int) -> str:
        return f"{num(sock[metric][stat], digits)} / {num(direct[metric][stat], digits)}"

    def ratio(metric: str, stat: str) -> str:
        a, b = sock[metric][stat], direct[metric][stat]
        return f"{b / a:.2f}×" if a and b else "–"

    t = THESIS
    rows = [
        [
            "connect mean µs (socket / direct)",
            f"{t['connect_mean'][0]:g} / {t['connect_mean'][1]:g}",
            pair("connect_us", "mean", 0),
        ],
        [
            "connect speed-up (direct mean / socket mean)",
            f"{t['connect_mean'][1] / t['connect_mean'][0]:.2f}×",
            ratio("connect_us", "mean"),
        ],
        ["connect p95 µs", f"{t['connect_p95'][0]:g} / {t['connect_p95'][1]:g}", pair("connect_us", "p95", 0)],
        [
            "lifecycle mean ms",
            f"{t['lifecycle_mean'][0]:g} / {t['lifecycle_mean'][1]:g}",
            pair("lifecycle_ms", "mean", 1),
        ],
        [
            "lifecycle variance ms²",
            f"{t['lifecycle_variance'][0]:g} / {t['lifecycle_variance'][1]:g}",
            pair("lifecycle_ms", "variance", 2),
        ],
        [
            "Levene p (lifecycle variance, mean-centred)",
            f"{THESIS_LEVENE_P:g}",
            pval(lev["levene_mean_p"]) if lev else "–",
        ],
        ["lifecycle p99 ms", f"{t['lifecycle_p99'][0]:g} / {t['lifecycle_p99'][1]:g}", pair("lifecycle_ms", "p99", 1)],
    ]
    return Table(["claim (socket / direct)", "thesis", "this run"], rows, "Thesis figures: AWS t3.micro, n = 1000.")


def stats_table(scenarios: Mapping[str, Any], metric: str, digits: int) -> Table:
    rows = []
    for name, entry in scenarios.items():
        d = entry.get(metric)
        if not d or not d.get("n"):
            continue
        rows.append(
            [name, str(d["n"])]
            + [num(d[k], digits) for k in ("mean", "median", "p95", "p99", "stdev", "min", "max")]
            + [
                ci(d.get("ci_median"), digits),
                ci(d.get("ci_p95"), digits),
                f"{d['outliers']} / {d['extreme_outliers']}",
            ]
        )
    return Table(
        [
            "scenario",
            "n",
            "mean",
            "median",
            "p95",
            "p99",
            "stdev",
            "min",
            "max",
            "95% CI median",
            "95% CI p95",
            "outliers 1.5×/3× IQR",
        ],
        rows,
    )


def comparisons_table(comparisons: Sequence[Mapping[str, Any]]) -> Table:
    rows = []
    for c in comparisons:
        star = "**" if c.get("emphasis") else ""
        rows.append(
            [
                f"{star}{c['a']} vs {c['b']}{star}",
                c["metric"],
                f"{num(c['median_a'], 1)} / {num(c['median_b'], 1)}",
                f"{num(c['ratio_median'], 3)} {ci(c['ratio_median_ci'], 3)}",
                f"{num(c['diff_median'], 1)} {ci(c['diff_median_ci'], 1)}",
                shift_cell(c),
                f"{pval(c['mannwhitney_p'])} ({pval(c['mannwhitney_p_holm'])})",
                f"{num(c['cliffs_delta'], 2)} {c['effect']}",
                f"{pval(c['levene_mean_p'])} ({pval(c['levene_mean_p_holm'])})",
                f"{pval(c['levene_median_p'])} ({pval(c['levene_median_p_holm'])})",
                f"{num(c['variance_a'], 2)} / {num(c['variance_b'], 2)}",
            ]
        )
    return Table(
        [
            "comparison",
            "metric",
            "median a / b",
            "ratio of medians [95% CI]",
            "a − b median [95% CI]",
            "Hodges–Lehmann a − b [family-wise CI]",
            "Mann–Whitney p (Holm)",
            "Cliff's δ",
            "Levene p (Holm)",
            "Brown–Forsythe p (Holm)",
            "variance a / b",
        ],
        rows,
        "Ratio < 1 and negative δ: the first scenario is faster. Holm correction within each test "
        "across all comparisons of the run. The bootstrap intervals are 95 % each; the Hodges–Lehmann shift's "
        "Mann–Whitney interval is at the Bonferroni level over all comparisons of this table. "
        "Bold: the headline pairs (injection against its direct twin).",
    )


def delay_table(fits: Mapping[str, Any]) -> list[Heading | Para | Bullets | Table | Image]:
    blocks: list[Heading | Para | Bullets | Table | Image] = []
    for family, fam in fits.items():
        if not isinstance(fam, Mapping) or fam.get("family") != family:
            continue
        life, conn = fam.get("lifecycle_ms"), fam.get("connect_us")
        if life:
            rows = [
                [r["scenario"], num(r["delay_ms"], 0), str(r["n"]), num(r["mean"]), num(r["diff"])]
                for r in life["table"]
            ]
            blocks.append(
                Table(
                    ["scenario", "delay ms", "n", "Average ms", "Diff ms vs reference"],
                    rows,
                    f"Lifecycle vs configured delay ({family} family).",
                )
            )
        lines = []
        for label, fit, unit in (("lifecycle", life, "ms per ms"), ("connect", conn, "µs per ms")):
            if fit and fit.get("refused"):
                lines.append(f"{label}: no slope — {fit['refused']}")
            if fit and fit.get("slope") is not None:
                lines.append(
                    f"{label}: slope {num(fit['slope'], 3)} {unit} (95% CI {ci(fit['slope_ci'], 3)}), "
                    f"intercept {num(fit['intercept'], 2)}, r = {num(fit['r'], 3)}, n = {fit['n']}, "
                    f"over {', '.join(fit['scenarios'])}"
                )
        if lines:
            blocks.append(Bullets(lines))
    if not blocks:
        blocks.append(Para("No fit: it needs direct scenarios with at least two different configured delays."))
    return blocks


def phases_table(scenarios: Mapping[str, Any]) -> Table:
    rows = []
    for name, entry in scenarios.items():
        p = entry.get("phases") or {}
        rows.append(
            [name]
            + [num(p.get(k), 2) for k, _ in PHASES]
            + [
                num(p.get("lifecycle_ms"), 1),
                num(p.get("resolve_ms"), 3),
                num(p.get("handshake_ms"), 3),
                num(p.get("fd_recv_ms"), 3),
                f"{p['connect_share']:.2%}" if p.get("connect_share") is not None else "–",
            ]
        )
    return Table(
        [
            "scenario",
            *[label + " ms" for _, label in PHASES],
            "lifecycle ms",
            "resolve ms",
            "handshake ms",
            "fd receive ms",
            "connection share",
        ],
        rows,
        "Means per phase. start → die is split into start → ready, connection, request and the rest, "
        "so the six phases add up to the lifecycle. Connection share = mean connect time / mean lifecycle.",
    )


def burst_table(scenarios: Mapping[str, Any]) -> Table | None:
    rows = []
    for points in burst_points(scenarios).values():
        for n_at_once, name in points:
            entry = scenarios[name]
            life = entry["lifecycle_ms"]
            rows.append(
                [
                    str(n_at_once),
                    name,
                    str(life["n"]),
                    num(life["median"]),
                    ci(life.get("ci_median"), 1),
                    num(life["p95"]),
                    num(entry["connect_us"]["median"], 0),
                ]
            )
    if not rows:
        return None
    rows.sort(key=lambda r: (int(r[0]), r[1]))
    return Table(
        ["N", "scenario", "n", "lifecycle median ms", "95% CI", "lifecycle p95 ms", "connect median µs"],
        rows,
        "Per cold start, with N cold starts started at once.",
    )


def paired_blocks_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    return Table(
        ["comparison", "metric", "blocks", "mean a − b [95% CI]", "median a − b", "Wilcoxon p"],
        [
            [
                f"{r['a']} vs {r['b']}",
                r["metric"],
                str(r["blocks"]),
                f"{num(r['mean_diff'], 2)} {ci(r['mean_diff_ci'], 2)}",
                num(r["median_diff"], 2),
                pval(r["wilcoxon_p"]),
            ]
            for r in rows
        ],
        "Interleaved run: per randomised block, the difference of the two scenarios' medians in that block; "
        "drift of the machine cancels within a block. Wilcoxon signed-rank over blocks (needs at least 5).",
    )


def plan_blocks(plan: Mapping[str, Any] | None) -> list[Heading | Para | Bullets | Table | Image]:
    """How the run was planned: order, seed, blocks, cold starts, and what was skipped and why."""
    if not plan:
        return []
    how = (
        f"interleaved in randomised blocks of up to {plan.get('block_size')} rounds, seed {plan.get('seed')}"
        if plan.get("interleave")
        else "one scenario after another"
    )
    out: list[Heading | Para | Bullets | Table | Image] = [
        Para(
            f"Planned {plan.get('cold_starts', 0)} cold starts (warm-ups included) in {len(plan.get('order', []))} "
            f"blocks, {how}; {plan.get('iterations')} measured per scenario, {plan.get('warmup')} warm-up(s) first."
        )
    ]
    skips = plan.get("skips") or []
    if skips:
        out.append(Bullets([f"{s['scenario']} skipped: {s['reason']}" for s in skips]))
    return out


def build_document(summary: Mapping[str, Any], plot_files: Sequence[str]) -> Document:
    scenarios = summary.get("scenarios", {})
    doc = Document("Cold-start benchmark report")
    b = doc.blocks
    b.append(Heading("Summary (thesis Table 2 shape)"))
    if scenarios:
        b.append(table2(scenarios))
    else:
        b.append(Para("No samples in this run."))
    versus = thesis_table(scenarios, summary.get("comparisons", []))
    if versus:
        b.append(Heading("Against the thesis"))
        b.append(versus)
    findings = summary.get("findings", [])
    b.append(Heading("Findings"))
    if findings:
        family = family_para(summary.get("family") or {})
        if family:
            b.append(family)
        b.append(Bullets(finding_lines(findings)))
        cmd = next((f["command"] for f in findings if f.get("command")), None)
        if cmd:
            b.append(Para(f"Produced by: `{cmd}`"))
    else:
        b.append(Para("No findings: the run lacks the scenario pairs they compare (e.g. socket and direct)."))
    if findings:
        b.extend(control_blocks(findings))
    b.extend(effects_blocks(summary.get("effects") or {}))
    b.extend(planning_blocks(summary.get("planning") or []))
    b.extend(stopping_blocks(summary.get("stopping")))
    verdicts = summary.get("verdicts", [])
    b.append(Heading("Expectations"))
    if verdicts:
        policy = summary.get("analysis", {}).get("expectation_policy", "report")
        b.append(Para(f"Policy: {policy}. p-values are two-sided and Holm-corrected across the expectations."))
        b.append(
            Table(
                ["status", "expectation", "observed", "threshold", "test", "p (Holm)", "n", "note"],
                [
                    [
                        v["status"],
                        v["expectation"],
                        num(v["lhs_value"], 2),
                        num(v["threshold"], 2),
                        v["test"],
                        f"{pval(v['p'])} ({pval(v['p_holm'])})",
                        f"{v['n_lhs']}" + (f" / {v['n_rhs']}" if v.get("rhs") else "") + f" (min {v['min_n']})",
                        v.get("note", ""),
                    ]
                    for v in verdicts
                ],
            )
        )
    else:
        b.append(Para("No expectations were declared."))
    gate = summary.get("gate", [])
    b.append(Heading("Gate"))
    b.append(Bullets([g["line"] for g in gate]) if gate else Para("No gate rules and no baseline."))
    b.append(Heading("Noise warnings"))
    warnings = warning_lines(summary)
    b.append(Bullets(warnings) if warnings else Para("None."))
    b.append(Heading("Comparisons"))
    comps = summary.get("comparisons", [])
    b.append(comparisons_table(comps) if comps else Para("Fewer than two comparable scenarios."))
    if summary.get("paired_blocks"):
        b.append(Heading("Paired differences per block (interleaved run)"))
        b.append(paired_blocks_table(summary["paired_blocks"]))
    b.append(Heading("Lifecycle vs configured delay"))
    b.extend(delay_table(summary.get("delay_fit", {})))
    b.append(Heading("Phase attribution"))
    b.append(phases_table(scenarios))
    bt = burst_table(scenarios)
    if bt:
        b.append(Heading("Bursts"))
        b.append(bt)
    campaign = plan_blocks(summary.get("plan"))
    if campaign:
        b.append(Heading("Campaign"))
        b.extend(campaign)
    b.append(Heading("Statistics per scenario"))
    b.append(Heading("connect_us (µs)", 3))
    b.append(stats_table(scenarios, "connect_us", 1))
    b.append(Heading("lifecycle_ms (ms)", 3))
    b.append(stats_table(scenarios, "lifecycle_ms", 2))
    b.append(Heading("Plots"))
    captions = {
        "connect_per_iteration.png": "Connection time per cold start (thesis Fig. 5)",
        "lifecycle_per_iteration.png": "Lifecycle per cold start (thesis Fig. 6)",
        "ecdf_connect.png": "ECDF of connection time",
        "box_lifecycle.png": "Lifecycle per scenario",
        "lifecycle_vs_delay.png": "Lifecycle vs configured delay with the fitted line",
        "phases.png": "Where the lifecycle goes",
        "burst.png": "Per-start lifecycle vs burst size",
    }
    for f in plot_files:
        b.append(Image(f, captions.get(f, f)))
    env = summary.get("environment", {})
    if env:
        b.append(Heading("Environment"))
        b.append(Table(["key", "value"], [[str(k), str(v)] for k, v in env.items()]))
    return doc
