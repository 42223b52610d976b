"""Report section: runtimes and the relay hand-off — what each runtime's probe found, which scenarios
it could not run (and why), what the relay hop costs per request against injection, and the
relay's CPU per MB in the pool manager. Built from summary.json only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .blocks import Bullets, Heading, Para, Table, num

Block = Heading | Para | Bullets | Table


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _median(entry: Mapping[str, Any], metric: str) -> Any:
    stats = entry.get(metric)
    return stats.get("median") if isinstance(stats, Mapping) else None


def probes_table(probes: Mapping[str, Any]) -> Table:
    rows = []
    for name, p in probes.items():
        tcp, unix = p.get("tcp_fd") or {}, p.get("unix_fd") or {}
        why = p.get("reason") or tcp.get("reason") or ""
        rows.append([name, _yes(p.get("runs")), _yes(tcp.get("works")), _yes(unix.get("works")), p["handoff"], why])
    return Table(
        ["runtime", "runs", "injected TCP fd", "AF_UNIX fd", "hand-off", "reason"],
        rows,
        caption="One probe container per runtime at testbed start (coldstart_bench/measure/runtimes.py).",
    )


def _headline_present(declared: Mapping[str, Any], scenarios: Mapping[str, Any]) -> str | None:
    refs = [r["scenario"] for r in declared.get("references", []) if r.get("role") == "headline"]
    return next((r for r in refs if r in scenarios), None)


def hop_table(scenarios: Mapping[str, Any]) -> Table | None:
    """Per relay scenario: request_rtt_us against the injected scenario it is compared with (headline)."""
    rows = []
    for sid, entry in scenarios.items():
        declared = entry.get("declared") or {}
        if declared.get("handoff") != "relay":
            continue
        rtt = _median(entry, "request_rtt_us")
        ref = _headline_present(declared, scenarios)
        if ref is None and declared.get("name") in scenarios:
            # The injected twin cannot run on this runtime: compare with injection on the default runtime.
            ref = _headline_present(scenarios[declared["name"]].get("declared") or {}, scenarios)
        ref_rtt = _median(scenarios[ref], "request_rtt_us") if ref else None
        extra = rtt - ref_rtt if rtt is not None and ref_rtt is not None else None
        rows.append(
            [
                sid,
                declared.get("runtime", ""),
                num(rtt, 1),
                ref or "–",
                num(ref_rtt, 1),
                num(extra, 1),
                num(_median(entry, "lifecycle_ms"), 1),
                str(entry.get("ok", 0)),
            ]
        )
    if not rows:
        return None
    return Table(
        [
            "relay scenario",
            "runtime",
            "request_rtt_us median",
            "injected reference",
            "its request_rtt_us",
            "relay hop (µs)",
            "lifecycle_ms median",
            "ok",
        ],
        rows,
        caption="request_rtt_us is each cold start's median over its echo round trips (--bench-requests).",
    )


def runtime_blocks(summary: Mapping[str, Any]) -> list[Block]:
    env = summary.get("environment") or {}
    probes = env.get("runtime_probes") or {}
    unsupported = summary.get("unsupported") or []
    hops = hop_table(summary.get("scenarios") or {})
    relay = env.get("relay_stats") or {}
    if not (probes or unsupported or hops or relay):
        return []
    blocks: list[Block] = [Heading("Runtimes and relay")]
    if probes:
        blocks.append(probes_table(probes))
    if unsupported:
        blocks.append(Para("Unsupported on their runtime (never measured, not failures):"))
        blocks.append(Bullets([f"{u['scenario']}: {u['reason']}" for u in unsupported]))
    if hops:
        blocks.append(hops)
    if relay:
        blocks.append(
            Para(
                f"Relay work in the pool manager over the run: {relay.get('started', 0)} relays, "
                f"{num(relay.get('bytes_a_to_b', 0) + relay.get('bytes_b_to_a', 0), 0)} bytes, "
                f"CPU {num(relay.get('cpu_ms_per_mb'), 1)} ms per MB, {num(relay.get('cpu_us_per_relay'), 1)} µs "
                f"per relay (zero-copy splice: {_yes(relay.get('zero_copy'))}). With a few small requests per "
                "cold start the per-MB figure is dominated by setting up and ending each relay."
            )
        )
    return blocks
