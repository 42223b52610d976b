"""The campaign plan: which scenarios run, in which blocks, with how many warm-ups, which are
skipped and why, under which seed. Computed once from the options and the selected scenarios; the
progress total, the executor, the environment record and the report all read it.

Sequential (the thesis's design): one block per scenario, in selection order. Interleaved (the
default): randomised complete blocks, every round runs each scenario once (a block of up to
`block_size` rounds) in a fresh seeded random order, so slow drift of a shared machine hits all
arms alike instead of masquerading as an effect.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalogue import Scenario


@dataclass(frozen=True)
class PlanSettings:
    """What of the options the plan depends on (BenchOptions has these fields too)."""

    iterations: int
    warmup: int = 1
    interleave: bool = True
    block_size: int = 5
    block_warmup: int = 1
    seed: int | None = None
    pg_external: object | None = None  # set: the pg-* scenarios run against the user's own server
    runtimes: tuple[str, ...] = ("runc",)  # --bench-runtimes: a scenario on another runtime is skipped


@dataclass(frozen=True)
class Block:
    """`count` measured rounds of one scenario, after `warmup` discarded ones. `index` is the round
    of blocks it belongs to (interleaved), or its position (sequential)."""

    index: int
    scenario: str
    count: int
    warmup: int = 0
    burst: int = 1

    @property
    def cold_starts(self) -> int:
        return (self.count + self.warmup) * self.burst


@dataclass(frozen=True)
class Skip:
    scenario: str
    reason: str


@dataclass
class Plan:
    scenarios: list[Scenario]  # measured, in selection order (skipped ones left out)
    blocks: list[Block]
    skips: list[Skip] = field(default_factory=list)
    interleave: bool = True
    seed: int | None = None
    block_size: int = 5
    iterations: int = 0
    warmup: int = 0
    block_warmup: int = 0
    pulled: list[str] = field(default_factory=list)  # measured because a selected scenario pulls them in

    @property
    def cold_starts(self) -> int:
        """Every cold start the executor will run, warm-ups included: the progress total."""
        return sum(b.cold_starts for b in self.blocks)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.scenarios]

    def scenario(self, scenario_id: str) -> Scenario:
        for s in self.scenarios:
            if s.id == scenario_id:
                return s
        raise KeyError(f"scenario {scenario_id!r} is not in the plan")

    def skip_reason(self, scenario_id: str) -> str:
        return next((s.reason for s in self.skips if s.scenario == scenario_id), "")

    def rounds(self) -> Iterator[list[Block]]:
        """Blocks grouped by round index, lazily, in order."""
        current: list[Block] = []
        for block in self.blocks:
            if current and block.index != current[0].index:
                yield current
                current = []
            current.append(block)
        if current:
            yield current

    def to_dict(self) -> dict[str, Any]:
        return {
            "interleave": self.interleave,
            "seed": self.seed,
            "block_size": self.block_size,
            "iterations": self.iterations,
            "warmup": self.warmup,
            "block_warmup": self.block_warmup,
            "cold_starts": self.cold_starts,
            "order": [[b.index, b.scenario, b.count] for b in self.blocks],
            "warmups": [b.warmup for b in self.blocks],
            "skips": [{"scenario": s.scenario, "reason": s.reason} for s in self.skips],
            "pulled": list(self.pulled),
        }

    def interleave_record(self) -> dict[str, Any]:
        """How summary.json's environment has recorded the interleaved order since version 1."""
        order = [[b.index, b.scenario, b.count] for b in self.blocks]
        return {"seed": self.seed, "block_size": self.block_size, "order": order}

    def blocks_of(self, scenario_id: str) -> list[Block]:
        return [b for b in self.blocks if b.scenario == scenario_id]


def plan_settings(options: Any) -> PlanSettings:
    """The plan's inputs from the plugin's options (any object with the same field names)."""
    return PlanSettings(
        iterations=options.iterations,
        warmup=options.warmup,
        interleave=options.interleave,
        block_size=options.block_size,
        block_warmup=options.block_warmup,
        seed=options.seed,
        pg_external=options.pg_external,
        runtimes=tuple(getattr(options, "runtimes", ("runc",))),
    )


def rounds_for(scenario: Scenario, iterations: int) -> int:
    """Bursts run ceil(iterations / N) rounds so every scenario measures about `iterations` starts."""
    return max(1, -(-iterations // scenario.burst))


def skip_reason(scenario: Scenario, settings: PlanSettings) -> str:
    if scenario.backend == "pg" and scenario.delay_ms > 0 and settings.pg_external is not None:
        return "the SYN-ACK delay needs the database container, not --bench-pg-target"
    if scenario.runtime not in settings.runtimes:
        return f"runtime {scenario.runtime} is not selected (--bench-runtimes {','.join(settings.runtimes)})"
    if scenario.proxy and settings.pg_external is not None:
        return "PgBouncer runs next to the database container, not in front of --bench-pg-target"
    return ""


def interleaved_order(
    scenario_ids: Sequence[str],
    iterations: int,
    block_size: int,
    seed: int,
    rounds: Mapping[str, int] | None = None,
) -> list[Block]:
    """Randomised complete blocks (see the module's docstring). Same seed, same order.

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


def plan(settings: PlanSettings, scenarios: Sequence[Scenario], pulled: Sequence[Scenario] = ()) -> Plan:
    """The campaign for the selected scenarios plus those they pull in (measured alike, after them in
    selection order). An interleaved plan without a seed draws one (recorded)."""
    selected_ids = {s.id for s in scenarios}
    pulled = [s for s in pulled if s.id not in selected_ids]
    scenarios = [*scenarios, *pulled]
    skips = [Skip(s.id, r) for s in scenarios if (r := skip_reason(s, settings))]
    skipped = {s.scenario for s in skips}
    measured = [s for s in scenarios if s.id not in skipped]
    by_id = {s.id: s for s in measured}
    seed = settings.seed
    blocks: list[Block] = []
    if settings.interleave:
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        rounds = {s.id: rounds_for(s, settings.iterations) for s in measured}
        warmed: set[str] = set()
        for b in interleaved_order(list(by_id), settings.iterations, settings.block_size, seed, rounds):
            # Every block after a scenario's first opens with a discarded cold start: switching the
            # testbed (delay sidecar, pool manager) perturbs the engine for the next start or two.
            warmup = settings.block_warmup if b.scenario in warmed else settings.warmup
            warmed.add(b.scenario)
            blocks.append(Block(b.index, b.scenario, b.count, warmup, by_id[b.scenario].burst))
    else:
        for i, s in enumerate(measured):
            blocks.append(Block(i, s.id, rounds_for(s, settings.iterations), settings.warmup, s.burst))
    return Plan(
        scenarios=measured,
        blocks=blocks,
        skips=skips,
        interleave=settings.interleave,
        seed=seed,
        block_size=settings.block_size,
        iterations=settings.iterations,
        warmup=settings.warmup,
        block_warmup=settings.block_warmup,
        pulled=[s.id for s in pulled if s.id not in skipped],
    )


def single_scenario_plan(scenario: Scenario, settings: PlanSettings, index: int = 0) -> Plan:
    """A scenario measured on demand (a test calling the harness for a scenario it did not select)."""
    return plan(
        PlanSettings(
            iterations=settings.iterations,
            warmup=settings.warmup,
            interleave=False,
            block_size=settings.block_size,
            block_warmup=settings.block_warmup,
            pg_external=settings.pg_external,
            runtimes=settings.runtimes,
        ),
        [scenario],
    )
