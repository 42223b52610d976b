"""The benchmark scenarios: what each id means for the function container and the testbed."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    id: str
    mode: str  # how the function is told to connect: "direct" | "socket"
    delay_ms: float = 0.0  # SYN-ACK delay on the backend while this scenario runs
    network: str = "bridge"  # "bridge" (the testbed network) | "none" (no container networking)
    pool_up: bool = True  # False: the pool manager is stopped, the function must fall back
    release: bool = False  # the function hands its connection back after use
    burst: int = 1  # cold starts started at once per round
    backend: str = "echo"  # "echo" | "pg"
    expect_path: str = ""  # connection path every sample must report ("" = same as mode)

    @property
    def path(self) -> str:
        return self.expect_path or self.mode


# The thesis's five scenarios (section 6), then the ones that go beyond it.
THESIS_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("socket", "socket"),
    Scenario("direct", "direct"),
    Scenario("direct-10ms", "direct", delay_ms=10),
    Scenario("direct-50ms", "direct", delay_ms=50),
    Scenario("direct-100ms", "direct", delay_ms=100),
)

EXTENDED_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("socket-nonet", "socket", network="none"),
    Scenario("socket-100ms", "socket", delay_ms=100),
    Scenario("fallback", "socket", pool_up=False, expect_path="fallback"),
    Scenario("socket-return", "socket", release=True),
)

PG_SCENARIOS: tuple[Scenario, ...] = (
    Scenario("pg-direct", "direct", backend="pg"),
    Scenario("pg-socket", "socket", backend="pg"),
    Scenario("pg-socket-nonet", "socket", network="none", backend="pg"),
    Scenario("pg-direct-10ms", "direct", delay_ms=10, backend="pg"),
)

DEFAULT_BURST_SIZES: tuple[int, ...] = (1, 2, 4, 8)


def burst_scenarios(sizes: tuple[int, ...] = DEFAULT_BURST_SIZES) -> tuple[Scenario, ...]:
    out: list[Scenario] = []
    for n in sizes:
        out.append(Scenario(f"burst-{n}-direct", "direct", burst=n))
        out.append(Scenario(f"burst-{n}-socket-nonet", "socket", network="none", burst=n))
    return tuple(out)


def all_scenarios(burst_sizes: tuple[int, ...] = DEFAULT_BURST_SIZES) -> tuple[Scenario, ...]:
    return THESIS_SCENARIOS + EXTENDED_SCENARIOS + PG_SCENARIOS + burst_scenarios(burst_sizes)


_BURST_RE = re.compile(r"^burst-(\d+)-")


def by_id(scenario_id: str, burst_sizes: tuple[int, ...] = DEFAULT_BURST_SIZES) -> Scenario:
    for s in all_scenarios(burst_sizes):
        if s.id == scenario_id:
            return s
    m = _BURST_RE.match(scenario_id)
    if m:
        for s in burst_scenarios((int(m.group(1)),)):
            if s.id == scenario_id:
                return s
    raise KeyError(f"unknown scenario {scenario_id!r}")


def parse_burst_sizes(text: str) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8); a clear ValueError for anything else."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--bench-bursts expects comma-separated positive integers, got {text!r}") from None
    if not sizes or any(n < 1 or n > 64 for n in sizes):
        raise ValueError(f"--bench-bursts sizes must be between 1 and 64, got {text!r}")
    return sizes
