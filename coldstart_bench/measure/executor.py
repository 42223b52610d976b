"""Measuring scenarios: one after another (the thesis's design) or interleaved in seeded random blocks."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..catalogue import Scenario
from ..samples import Sample
from .runner import ColdStartResult, ColdStartRunner, to_sample

if TYPE_CHECKING:
    from .testbed import Testbed

OnSample = Callable[[Sample], None]


@dataclass(frozen=True)
class Block:
    index: int
    scenario: str
    count: int


def interleaved_order(
    scenario_ids: Sequence[str],
    iterations: int,
    block_size: int,
    seed: int,
    rounds: Mapping[str, int] | None = None,
) -> list[Block]:
    """Randomised complete blocks: every round runs each scenario once (a block of up to
    `block_size` rounds) in a fresh random order, so slow drift of a shared machine hits all
    arms alike instead of masquerading as an effect. Same seed, same order.

    `rounds` gives a scenario fewer rounds than `iterations` (bursts start N per round); a
    scenario drops out of later rounds once its rounds are done."""
    rng = random.Random(seed)
    remaining = {sid: (rounds or {}).get(sid, iterations) for sid in scenario_ids}
    blocks: list[Block] = []
    index = 0
    while any(n > 0 for n in remaining.values()):
        order = [sid for sid in scenario_ids if remaining[sid] > 0]
        rng.shuffle(order)
        for sid in order:
            count = min(block_size, remaining[sid])
            blocks.append(Block(index, sid, count))
            remaining[sid] -= count
        index += 1
    return blocks


def cold_start_samples(
    testbed: Testbed,
    runner: ColdStartRunner,
    scenario: Scenario,
    iteration: int,
    block: int = 0,
) -> list[Sample]:
    """One round of a scenario: one cold start, or `burst` of them started at once."""
    spec = testbed.function_spec(scenario)
    results: list[ColdStartResult]
    results = runner.run_burst(spec, scenario.burst) if scenario.burst > 1 else [runner.run(spec)]
    if scenario.backend == "pg":
        # Each successful OLTP cold start, warm-ups included, commits one transfer: counted here,
        # where every cold start passes, for the database check after the scenario.
        testbed.pg_cold_starts_ok += sum(r.ok for r in results)
    return [
        to_sample(
            r,
            scenario=scenario.id,
            iteration=iteration * scenario.burst + k,
            delay_ms=scenario.delay_ms,
            network=scenario.network,
            block=block,
            burst=scenario.burst,
        )
        for k, r in enumerate(results)
    ]


def rounds_for(scenario: Scenario, iterations: int) -> int:
    """Bursts run ceil(iterations / N) rounds so every scenario measures about `iterations` starts."""
    return max(1, -(-iterations // scenario.burst))


def validate(scenario: Scenario, samples: Sequence[Sample], pool_status: str = "") -> list[str]:
    """Checks that make a run fail loudly instead of reporting numbers that mean nothing."""
    problems: list[str] = []
    failed = [s for s in samples if not s.ok]
    for s in failed[:5]:
        problems.append(f"cold start {s.iteration} ({s.container_id[:12]}) failed: {s.error}")
    if len(failed) > 5:
        problems.append(f"... and {len(failed) - 5} more failed cold starts")
    ids = [s.container_id for s in samples]
    if len(set(ids)) != len(ids):
        problems.append("the same container was measured twice: cold starts are not distinct")
    wrong_path = [s for s in samples if s.ok and s.path != scenario.path]
    if wrong_path:
        detail = f" (pool manager: {pool_status})" if pool_status and pool_status != "running" else ""
        problems.append(
            f"{len(wrong_path)} cold starts took path {wrong_path[0].path!r}, expected {scenario.path!r}{detail}"
        )
    if scenario.network == "none":
        leaky = [s for s in samples if s.ok and set(filter(None, s.interfaces.split(";"))) - {"lo"}]
        if leaky:
            problems.append(f"function saw network interfaces {leaky[0].interfaces!r} with network_mode=none")
    ok_connect = [s.connect_us for s in samples if s.ok and s.connect_us == s.connect_us]
    if scenario.delay_ms > 0 and scenario.mode == "direct" and ok_connect:
        median = statistics.median(ok_connect)
        if median < scenario.delay_ms * 1000:
            problems.append(
                f"delay not in effect: median connect_us {median:.0f} < configured {scenario.delay_ms:.0f} ms"
            )
    return problems
