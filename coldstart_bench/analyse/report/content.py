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
)
from .plots import PHASES
from .wire_sections import wire_sections


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


def thesis_table(
    scenarios: Mapping[str, Any], comparisons: Sequence[Mapping[str, Any]], speedup: str = "–"
) -> Table | None:
    """The thesis's socket-vs-direct claims next to this run's values (same statistics: means where it
    used means), for the scenarios the catalogue declares as the thesis's pair."""
    names = thesis_pair(scenarios)
    if names is None:
        return None
    sock, direct = scenarios[names[0]], scenarios[names[1]]
    lev = next((c for c in comparisons if (c["a"], c["b"], c["metric"]) == (*names, "lifecycle_ms")), None)

    def pair(metric: str, stat: str, digits: int) -> str:
        return f"{num(sock[metric][stat], digits)} / {num(direct[metric][stat], digits)}"

    t = THESIS
    rows = [
        [
            "connect mean µs (socket / direct)",
            f"{t['connect_mean'][0]:g} / {t['connect_mean'][1]:g}",
            pair("connect_us", "mean", 0),
        ],
        [
            "connect speed-up (the Answers' estimate; the thesis: ratio of means)",
            f"{t['connect_mean'][1] / t['connect_mean'][0]:.2f}×",
            speedup,
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


def stats_table(scenarios: Mapping[str, Any], metric: str, digits: int, pct: Any = None) -> Table:
    """Per scenario; percentiles through `pct(entry, stat, digits)` (shown only where n supports them)."""
    rows = []
    for name, entry in scenarios.items():
        d = entry.get(metric)
        if not d or not d.get("n"):
            continue
        p95 = pct(d, "p95", digits) if pct else num(d["p95"], digits)
        p99 = pct(d, "p99", digits) if pct else num(d["p99"], digits)
        rows.append(
            [
                name,
                str(d["n"]),
                num(d["mean"], digits),
                num(d["median"], digits),
                p95,
                p99,
                num(d["stdev"], digits),
                f"{num(d['min'], digits)} – {num(d['max'], digits)}",
                ci(d.get("ci_median"), digits),
                f"{d['outliers']} / {d['extreme_outliers']}",
            ]
        )
    note = ""
    if pct is not None:
        from .answer_sections import PERCENTILE_FOOTNOTE, percentile_note

        note = percentile_note() if any(PERCENTILE_FOOTNOTE in c for r in rows for c in r) else ""
    return Table(
        [
            "scenario",
            "n",
            "mean",
            "median",
            "p95",
            "p99",
            "stdev",
            "min – max",
            "95% CI median",
            "outliers 1.5×/3× IQR",
        ],
        rows,
        note,
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
    pulled = plan.get("pulled") or []
    if pulled:
        out.append(Para(f"Pulled in by the selected scenarios they are compared with (no test of their own, "
                        f"validated with the test that pulled them): {', '.join(pulled)}."))  # fmt: skip
    return out


BREAKDOWN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("uds_connect_us", "Unix connect"),
    ("request_write_us", "request write"),
    ("reply_recv_us", "reply + fd receive"),
    ("reply_parse_us", "reply parse"),
    ("sock_wrap_us", "socket object"),
    ("acquire_other_us", "rest"),
)


ARM_PHASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("runtime_start_us", "runtime start"),
    ("library_load_us", "library load"),
    ("acquire_us", "acquire"),
    ("verify_us", "verify"),
    ("session_setup_us", "session set-up"),
    ("connect_us", "connect"),
    ("connection_total_us", "library + connect"),
    ("first_request_us", "first request"),
    ("time_to_first_reply_us", "main → first reply"),
)


def arm_phases_table(phased: Mapping[str, Any]) -> Table:
    """The phases every arm reports alike, per scenario (medians, µs)."""
    rows = [
        [n, e.get("path") or "–", e.get("library") or "–", str(e["n"])]
        + [num(e.get(k), 0) for k, _ in ARM_PHASE_COLUMNS]
        for n, e in phased.items()
    ]
    return Table(
        ["scenario", "path", "library", "n", *[label + " µs" for _, label in ARM_PHASE_COLUMNS]],
        rows,
        "Medians, one clock origin (the fd-3 entrypoint's first instruction, through which every arm "
        "starts). connect = acquire + verify + session set-up in every arm; library load (driver, "
        "ssl/libcrypto, pool client) is its own phase; an entrypoint's acquire before main counts as "
        "connection work, not runtime start. Columns: docs/phases.md.",
    )


def connect_breakdown_blocks(breakdown: Mapping[str, Any]) -> list[Heading | Para | Bullets | Table | Image]:
    """connect_us of socket scenarios as its phases (medians), and the prefetch every mode pays."""
    phased = {n: e for n, e in breakdown.items() if e.get("connect_us") is not None}
    out: list[Heading | Para | Bullets | Table | Image] = []
    if phased:
        rows = [
            [n, str(e["n"]), num(e["connect_us"], 0)]
            + [num(e.get(k), 0) for k, _ in BREAKDOWN_COLUMNS]
            + [f"{e['reply_recv_share']:.0%}" if e.get("reply_recv_share") is not None else "–"]
            + [num(e.get("fd_check_us"), 0), num(e.get("protocol_import_us"), 0)]
            for n, e in phased.items()
        ]
        out.append(
            Table(
                [
                    "scenario",
                    "n",
                    "connect µs",
                    *[label + " µs" for _, label in BREAKDOWN_COLUMNS],
                    "reply share",
                    "fd check µs (verify)",
                    "pool client import µs (library load)",
                ],
                rows,
                "Medians. The acquire of the injected path as its phases (rest = call overhead and closing "
                "the Unix socket); medians of phases need not add up to the median connect. connect_us adds "
                "the fd check (verify_us), as direct mode's adds its own; the pool client's import is the "
                "library load, before the clock.",
            )
        )
    prefetched = {n: e for n, e in breakdown.items() if e.get("prefetch_us") is not None}
    if prefetched:
        out.append(
            Table(
                ["scenario", "prefetch µs", "prefetched MiB"],
                [
                    [n, num(e["prefetch_us"], 0), num((e.get("prefetch_bytes") or 0) / 2**20, 1)]
                    for n, e in prefetched.items()
                ],
                "Every mode pages in its executable mappings before any clock (components/prefetch.py): "
                "inside the lifecycle, outside connect_us; --no-prefetch in the function turns it off.",
            )
        )
    return out


def harness_time_blocks(spent: Mapping[str, Any]) -> list[Heading | Para | Bullets | Table | Image]:
    """The wall/lifecycle ratio, where the wall time went, and the warm-up evidence."""
    out: list[Heading | Para | Bullets | Table | Image] = []
    if spent.get("wall_lifecycle_ratio") is not None:
        out.append(
            Para(
                f"Wall time of the cold starts' executor: {num(spent['wall_s'])} s for "
                f"{num(spent['measured_lifecycle_s'])} s of measured lifecycles, "
                f"**{spent['wall_lifecycle_ratio']:.2f}×**. Warm-ups "
                f"{num(spent['warmup_lifecycle_s'])} s ({spent['warmup_starts']} starts), testbed switches "
                f"{num(spent['prepare_s'])} s, harness between starts {num(spent['harness_s'])} s "
                f"(median gap destroy → next create {num(spent.get('gap_between_starts_ms_median'))} ms). "
                f"Warm-ups after: {', '.join(spent.get('warmup_after') or []) or '–'}; "
                f"equal testbed states grouped: {spent.get('group_by_state')}."
            )
        )
    by_switch = spent.get("prepare_by_switch") or {}
    if by_switch:
        out.append(
            Table(
                ["block opened by", "blocks", "testbed switch s", "longest s"],
                [[kind, str(e["blocks"]), num(e["s"], 1), num(e["max_s"], 2)] for kind, e in by_switch.items()],
                "Time in Testbed.prepare by what changed since the previous block (a scenario's first block "
                "also starts its backend: PostgreSQL, PgBouncer, the TLS server).",
            )
        )
    evidence = spent.get("warmup_evidence") or {}
    if evidence:
        out.append(
            Table(
                [
                    "switch",
                    "blocks",
                    "first position",
                    "first − later median ms [95% CI]",
                    "relative",
                    "Wilcoxon p (greater)",
                    "perturbs",
                ],
                [
                    [
                        kind,
                        str(e["blocks"]),
                        ",".join(map(str, e["first_position"])),
                        f"{num(e['median_excess_ms'], 1)} {ci(e.get('median_excess_ci'), 1)}",
                        f"{e['median_excess_rel']:+.1%}" if e.get("median_excess_rel") is not None else "–",
                        pval(e.get("wilcoxon_greater_p")),
                        "yes" if e.get("perturbs") else "no",
                    ]
                    for kind, e in evidence.items()
                ],
                "Per block: lifecycle of its first measured cold start minus the median of its later ones, by the "
                "switch that opened the block. First position 0: no warm-up ran before it (the evidence for a "
                "warm-up); > 0: what is left after the warm-ups.",
            )
        )
    return out


# --- TLS: the thesis's Table 1 re-measured, and where TLS set-up time goes ------------------------

_TLS_PHASE_NAMES = {
    "resolve_us": "resolve (getaddrinfo)",
    "handshake_us": "TCP connect",
    "ssl_import_us": "import ssl (loads libssl/libcrypto)",
    "tls_context_us": "SSLContext + CA file",
    "tls_handshake_us": "TLS 1.3 handshake + verification",
    "fd_recv_us": "acquire over the Unix socket (fd + meta.tls)",
    "tls_setup_us": "continue the session (record layer, libcrypto, keys)",
}


def _tls_row(label: str, d: Mapping[str, Any], thesis_mean: float) -> list[str]:
    return [label, str(d["n"]), num(d["mean"]), num(d["p95"]), num(d["median"]), num(thesis_mean)]


def tls_blocks(tls: Mapping[str, Any] | None) -> list[Any]:
    if not tls:
        return []
    t1 = tls["table1"]
    tcp, tls13 = t1["tcp_connect_us"], t1["tls13_connect_us"]
    thesis = t1["thesis"]
    blocks: list[Any] = [
        Heading("TLS 1.3 (thesis Table 1 re-measured)"),
        Para(
            f"TCP from {', '.join(tcp['scenarios'])} ({tcp['metric']}); TLS 1.3 from "
            f"{', '.join(tls13['scenarios'])} ({tls13['metric']}), measured inside the cold function."
        ),
        Table(
            ["connection", "n", "mean µs", "p95 µs", "median µs", "thesis mean µs"],
            [
                [
                    "TCP",
                    str(tcp["n"]),
                    num(tcp["mean"]),
                    num(tcp["p95"]),
                    num(tcp["median"]),
                    num(thesis["tcp_mean_us"]),
                ],
                [
                    "TLS 1.3",
                    str(tls13["n"]),
                    num(tls13["mean"]),
                    num(tls13["p95"]),
                    num(tls13["median"]),
                    num(thesis["tls_mean_us"]),
                ],
                ["TLS / TCP (mean)", "", num(t1["tls_over_tcp_mean"], 2), "", "", num(thesis["tls_over_tcp_mean"], 2)],
            ],
        ),
    ]
    rows = []
    for group, label in (("direct_phases_us", "direct"), ("injected_phases_us", "injected")):
        for metric, d in (tls.get(group) or {}).items():
            if d["n"]:
                rows.append(
                    [label, _TLS_PHASE_NAMES.get(metric, metric), str(d["n"]), num(d["mean"]), num(d["median"])]
                )
    if rows:
        blocks.append(Heading("Where TLS set-up time goes", 3))
        blocks.append(Table(["function", "phase", "n", "mean µs", "median µs"], rows))
    notes = []
    if tls.get("paths"):
        notes.append(f"injected sessions continued on: {', '.join(tls['paths'])}")
    if tls.get("cipher_suites"):
        notes.append(f"cipher suites negotiated: {', '.join(tls['cipher_suites'])}")
    if notes:
        blocks.append(Bullets(notes))
    return blocks


def _run_para(summary: Mapping[str, Any]) -> Para:
    env = summary.get("environment") or {}
    scenarios = summary.get("scenarios") or {}
    cold = sum(int(e.get("n", 0)) for e in scenarios.values())
    when = f", {env['started_utc']} – {env.get('finished_utc') or '?'}" if env.get("started_utc") else ""
    cmd = f" Command: `{env['command']}`." if env.get("command") else ""
    where = f" on {env['hostname']}" if env.get("hostname") else ""
    return Para(f"{len(scenarios)} scenarios, {cold} measured cold starts{where}{when}.{cmd}")


def round_trip_blocks(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The --bench-rtt variants: what each arm's connect costs in round trips to the backend."""
    if not rows:
        return []
    return [
        Heading("A backend at a network distance (round trips before the first reply)"),
        Para(
            "Every packet between function and backend delayed by the round-trip time; round trips = median "
            "connect_us / RTT, rounded; added = the same arm's median without the distance subtracted."
        ),
        Table(
            ["scenario", "RTT ms", "connect median µs", "round trips", "added µs", "added (RTTs)"],
            [
                [
                    str(r["scenario"]),
                    num(r["rtt_ms"], 1),
                    num(r["connect_us_median"]),
                    str(r["round_trips"]),
                    num(r.get("added_us")),
                    num(r.get("added_round_trips"), 2),
                ]
                for r in rows
            ],
        ),
    ]


def build_document(summary: Mapping[str, Any], plot_files: Sequence[str]) -> Document:
    """Answers first, then the gate and warnings, one section per scenario family, and an appendix
    with everything else (findings as sentences, raw comparisons, per-block tables, planning,
    per-scenario statistics, the campaign and the environment)."""
    from .answer_sections import answers_blocks, family_blocks, gate_blocks, narrow_tables, percentile

    scenarios = summary.get("scenarios", {})
    doc = Document("Cold-start benchmark report")
    b = doc.blocks
    b.append(_run_para(summary))
    b.extend(answers_blocks(summary))
    b.extend(gate_blocks(summary))
    extras: dict[str, list[Any]] = {"thesis": [], "tls": [], "burst": [], "runtime": []}
    versus = thesis_table(scenarios, summary.get("comparisons", []), _thesis_speedup(summary))
    if versus:
        extras["thesis"] += [Heading("Against the thesis", 3), versus]
    if summary.get("delay_fit"):
        extras["thesis"] += [Heading("Lifecycle vs configured delay", 3), *delay_table(summary["delay_fit"])]
        if "lifecycle_vs_delay.png" in plot_files:
            extras["thesis"].append(
                Image("lifecycle_vs_delay.png", "Lifecycle vs configured delay with the fitted line")
            )
    extras["tls"] += tls_blocks(summary.get("tls"))
    extras["rtt"] = round_trip_blocks(summary.get("round_trips") or [])
    bt = burst_table(scenarios)
    if bt:
        extras["burst"] += [bt] + (
            [Image("burst.png", "Per-start lifecycle vs burst size")] if "burst.png" in plot_files else []
        )
    from .runtimes import runtime_blocks  # its own module; it builds on the blocks defined here

    extras["runtime"] += [Heading(x.text, 3) if isinstance(x, Heading) else x for x in runtime_blocks(summary)]
    for section in wire_sections(summary):
        family = "lang" if section.heading.startswith("Languages") else "pg-proxy"
        extras.setdefault(family, []).extend(
            [Heading(section.heading, 3), Table(section.headers, section.rows, section.caption)]
        )
    b.extend(family_blocks(summary, plot_files, {k: _sub(v) for k, v in extras.items()}))

    b.append(Heading("Appendix"))
    findings = summary.get("findings", [])
    b.append(Heading("Findings as sentences", 3))
    if findings:
        judged = family_para(summary.get("family") or {})
        if judged:
            b.append(judged)
        b.append(Bullets(finding_lines(findings)))
        cmd = next((f["command"] for f in findings if f.get("command")), None)
        if cmd:
            b.append(Para(f"Produced by: `{cmd}`"))
        b.extend(_sub(control_blocks(findings)))
    else:
        b.append(Para("No findings: the run lacks the scenario pairs they compare (e.g. socket and direct)."))
    b.extend(_sub(effects_blocks(summary.get("effects") or {})))
    b.extend(_sub(planning_blocks(summary.get("planning") or [])))
    b.extend(_sub(stopping_blocks(summary.get("stopping"))))
    verdicts = summary.get("verdicts", [])
    b.append(Heading("Expectations", 3))
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
    b.append(Heading("Comparisons (raw)", 3))
    comps = summary.get("comparisons", [])
    b.append(comparisons_table(comps) if comps else Para("Fewer than two comparable scenarios."))
    if summary.get("paired_blocks"):
        b.append(Heading("Paired differences per block (interleaved run)", 3))
        b.append(paired_blocks_table(summary["paired_blocks"]))
    b.append(Heading("Phase attribution", 3))
    b.append(phases_table(scenarios))
    if "phases.png" in plot_files:
        b.append(Image("phases.png", "Where the lifecycle goes"))
    if summary.get("arm_phases"):
        b.append(Heading("Connection phases per arm", 3))
        b.append(arm_phases_table(summary["arm_phases"]))
    breakdown = connect_breakdown_blocks(summary.get("connect_breakdown") or {})
    if breakdown:
        b.append(Heading("Where the injected connect goes", 3))
        b.extend(breakdown)
    campaign = plan_blocks(summary.get("plan"))
    spent = harness_time_blocks(summary.get("harness_time") or {})
    if campaign or spent:
        b.append(Heading("Campaign", 3))
        b.extend(campaign)
        b.extend(spent)
    b.append(Heading("Statistics per scenario", 3))
    b.append(Para("connect_us (µs):"))
    b.append(stats_table(scenarios, "connect_us", 1, percentile))
    b.append(Para("lifecycle_ms (ms):"))
    b.append(stats_table(scenarios, "lifecycle_ms", 2, percentile))
    per_iteration = {
        "connect_per_iteration.png": "Connection time per cold start (thesis Fig. 5)",
        "lifecycle_per_iteration.png": "Lifecycle per cold start (thesis Fig. 6)",
    }
    shown = [f for f in per_iteration if f in plot_files]
    if shown:
        b.append(Heading("Per cold start, in run order", 3))
        b.extend(Image(f, per_iteration[f]) for f in shown)
    env = summary.get("environment", {})
    if env:
        b.append(Heading("Environment", 3))
        b.append(Table(["key", "value"], [[str(k), str(v)] for k, v in env.items()]))
    doc.blocks = narrow_tables(b)
    return doc


def _thesis_speedup(summary: Mapping[str, Any]) -> str:
    """The one speed-up of the thesis's pair: the judged finding's estimate, as the Answers give it."""
    from .answers import answers

    pair = thesis_pair(summary.get("scenarios") or {})
    for a in answers(summary):
        if pair and a.kind == "connect_speedup" and (a.subject, a.reference) == pair:
            return a.effect
    return "–"


def _sub(blocks: Sequence[Any]) -> list[Any]:
    """Sections built for the top level, placed under the appendix: their headings one level down."""
    return [Heading(x.text, max(x.level, 3)) if isinstance(x, Heading) else x for x in blocks]
