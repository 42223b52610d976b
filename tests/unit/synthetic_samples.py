"""Synthetic cold starts for the analysis tests: lognormal draws shaped like the thesis's numbers."""

from __future__ import annotations

import numpy as np

from coldstart_bench.samples import Sample

# (connect µs, lifecycle ms, configured delay ms, mode) per scenario, after the thesis's Table 2.
THESIS_LIKE: dict[str, tuple[float, float, float, str]] = {
    "socket": (260.0, 338.0, 0.0, "socket"),
    "direct": (951.0, 353.0, 0.0, "direct"),
    "direct-10ms": (10_951.0, 365.0, 10.0, "direct"),
    "direct-50ms": (50_951.0, 410.0, 50.0, "direct"),
    "direct-100ms": (100_951.0, 461.0, 100.0, "direct"),
}


def scenario_samples(
    scenario: str,
    n: int,
    connect_us: float,
    lifecycle_ms: float,
    *,
    delay_ms: float = 0.0,
    mode: str = "direct",
    sigma_connect: float = 0.3,
    sigma_life: float = 0.03,
    seed: int = 0,
    burst: int = 1,
) -> list[Sample]:
    """n successful cold starts; the lifecycle phases add up to the lifecycle."""
    rng = np.random.default_rng(seed)
    connect = connect_us * rng.lognormal(0.0, sigma_connect, n)
    life = lifecycle_ms * rng.lognormal(0.0, sigma_life, n)
    out = []
    for i in range(n):
        create, destroy = 0.3 * life[i], 0.1 * life[i]
        out.append(
            Sample(
                scenario=scenario,
                iteration=i,
                mode=mode,
                container_id=f"{scenario}-{seed}-{i}",
                ok=True,
                connect_us=float(connect[i]),
                lifecycle_ms=float(life[i]),
                request_rtt_us=80.0,
                create_to_start_ms=float(create),
                start_to_ready_ms=float(0.4 * life[i]),
                start_to_die_ms=float(life[i] - create - destroy),
                die_to_destroy_ms=float(destroy),
                delay_ms=delay_ms,
                path=mode,
                burst=burst,
                t_create_ns=10**9 * (i + 1),
            )
        )
    return out


def thesis_run(n: int = 30, seed: int = 0, scenarios: tuple[str, ...] = tuple(THESIS_LIKE)) -> list[Sample]:
    """The five thesis scenarios (or a subset), socket's lifecycle steadier than direct's."""
    out: list[Sample] = []
    for k, name in enumerate(scenarios):
        connect, life, delay, mode = THESIS_LIKE[name]
        sigma = 0.01 if mode == "socket" else 0.03
        out += scenario_samples(
            name, n, connect, life, delay_ms=delay, mode=mode, sigma_life=sigma, seed=seed * 100 + k
        )
    return out


# Every key describe() gives a metric (and summary.json carries per scenario and metric).
DESCRIBE_FIELDS = ("n", "mean", "median", "p50", "p95", "p99", "variance", "stdev", "min", "max", "iqr",
                   "outliers", "extreme_outliers", "ci_median", "ci_p95")  # fmt: skip
