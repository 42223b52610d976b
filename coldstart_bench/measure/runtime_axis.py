"""The runtime axis at testbed start: which runtimes the engine offers, what each does with handed
fds (one probe container per runtime), and per scenario whether it can run there at all.

A scenario whose runtime the engine does not offer is skipped with the configuration to add. One
whose runtime cannot deliver what the scenario needs (an injected TCP fd on gVisor, a network for a
direct connect on a runtime registered with --network=none) is *unsupported*: reported with the
probe's reason, never measured, never a failure.

Also here: the pool manager's relay totals over the run (its ``stats`` op, summed over restarts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..catalogue import Scenario
from .runtimes import RuntimeProbe, engine_runtimes, missing_runtime_message, probe_runtime

MISSING = "missing"  # the engine does not offer the runtime: skipped, with what to configure
UNSUPPORTED = "unsupported"  # the runtime cannot give the scenario what it needs: reported, not measured


def scenario_handoff(scenario: Scenario) -> str:
    """What the scenario needs delivered: ``direct`` (nothing), ``relay`` (an AF_UNIX fd) or ``inject``."""
    if scenario.mode == "direct":
        return "direct"
    return "relay" if scenario.handoff == "relay" else "inject"


def needs_network(scenario: Scenario) -> bool:
    """The function connects by itself: direct mode, or the fallback when the pool is down."""
    return scenario.mode == "direct" or not scenario.pool_up


@dataclass
class RuntimeSupport:
    offered: dict[str, dict[str, Any]]
    probes: dict[str, RuntimeProbe] = field(default_factory=dict)

    def verdict(self, scenario: Scenario) -> tuple[str, str] | None:
        """None if the scenario can run on its runtime, else (MISSING | UNSUPPORTED, reason)."""
        runtime = scenario.runtime
        if runtime not in self.offered:
            return MISSING, missing_runtime_message(runtime, self.offered)
        probe = self.probes.get(runtime)
        if probe is None:
            return None
        reason = probe.unsupported_reason(scenario_handoff(scenario), needs_network(scenario))
        return (UNSUPPORTED, reason) if reason else None

    def as_dict(self) -> dict[str, Any]:
        return {name: probe.as_dict() for name, probe in self.probes.items()}


def probe_selected(
    client: Any,
    runtimes: Iterable[str],
    image: str,
    labels: Mapping[str, str] | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> RuntimeSupport:
    """Read the engine's runtimes and probe each selected one that it offers, once."""
    offered = engine_runtimes(client)
    support = RuntimeSupport(offered)
    for name in runtimes:
        if name not in offered:
            log(f"runtime {name} is not registered with the engine: its scenarios are skipped")
            continue
        probe = probe_runtime(client, name, image, offered=offered, labels=labels)
        support.probes[name] = probe
        log(
            f"runtime {name}: {probe.handoff} (TCP fd {'works' if probe.tcp_fd.works else 'dropped'}, "
            f"AF_UNIX fd {'works' if probe.unix_fd.works else 'dropped'}{', ' + probe.reason if probe.reason else ''})"
        )
    return support


_SUMMED = ("started", "closed", "reset", "stopped", "expired", "bytes_a_to_b", "bytes_b_to_a", "cpu_s")


@dataclass
class RelayTotals:
    """The manager's relay counters over the run (a restarted manager starts from zero again)."""

    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMMED, 0))
    zero_copy: bool | None = None
    readings: int = 0

    def add(self, relay_stats: Mapping[str, Any]) -> None:
        for key in _SUMMED:
            value = relay_stats.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.totals[key] += value
        if "zero_copy" in relay_stats:
            self.zero_copy = bool(relay_stats["zero_copy"])
        self.readings += 1

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: (round(v, 6) if k == "cpu_s" else int(v)) for k, v in self.totals.items()}
        moved = self.totals["bytes_a_to_b"] + self.totals["bytes_b_to_a"]
        relays = self.totals["started"]
        out["cpu_ms_per_mb"] = round(self.totals["cpu_s"] * 1e3 / (moved / 1e6), 3) if moved else None
        out["cpu_us_per_relay"] = round(self.totals["cpu_s"] * 1e6 / relays, 1) if relays else None
        out["zero_copy"] = self.zero_copy
        return out
