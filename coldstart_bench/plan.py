"""The campaign plan: which scenarios run, in which blocks, with how many warm-ups, which are
skipped and why, under which seed. Computed once from the options and the selected scenarios; the
progress total, the executor, the environment record and the report all read it.

Sequential (the thesis's design): one block per scenario, in selection order. Interleaved (the
default): randomised complete blocks, every round runs each scenario once (a block of up to
`block_size` rounds) in a fresh seeded random order, so slow drift of a shared machine hits all
arms alike instead of masquerading as an effect.

Within a round, scenarios that need the same testbed state (backend, SYN-ACK delay, pool manager
up or down; then the function's network) run back to back: the order of the groups is drawn at
random per round, and so is the order inside each group, so every arm still takes random positions
while the testbed switches once per group instead of up to once per block. Each block records the
switch that opened it (`Block.switch`); only switches named in `warmup_after` get the discarded
warm-up start(s) — which ones perturb the next cold start is measured, not assumed (see
analyse/harness_time.py, `warmup_evidence` in summary.json).
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .catalogue import Scenario

# What can change between two consecutive blocks. "start": the run's first block; "first": a
# scenario's first block (its image / network not used yet in this run); "backend", "delay", "pool":
# the testbed was switched; "network": the function's network differs from the previous block's;
# "scenario": only the scenario changed (same testbed state).
SWITCH_KINDS: tuple[str, ...] = ("start", "first", "backend", "delay", "pool", "network", "scenario")
# Blocks opened by these switches get warm-ups by default: a switch is warmed up when data shows it
# slows the next cold start, or has not been measured yet. From a run without block warm-ups (README,
# "Harness time"; summary.json `warmup_evidence`): after a delay, pool, network or same-state
# scenario switch, and before a scenario's first block, the first cold start of a block was not
# measurably slower than the later ones (one-sided Wilcoxon, 5-10 blocks each, all p >= 0.09; a second
# run gave a scenario's first block +183 ms, p = 0.03 over 5 blocks: `--bench-warmup-after first` warms
# it up, at one start per scenario). The run's very first start ("start") always is; a backend switch
# (another function image) was not measured: kept until it is.
DEFAULT_WARMUP_AFTER: frozenset[str] = frozenset({"start", "backend"})


def parse_warmup_after(text: str) -> frozenset[str]:
    """'delay,pool' -> {'delay','pool'}; 'all' and 'none' too; 'start' is always warmed up."""
    words = {w.strip() for w in text.split(",") if w.strip()}
    if words == {"all"}:
        return frozenset(SWITCH_KINDS)
    if words == {"none"}:
        return frozenset({"start"})
    unknown = sorted(words - set(SWITCH_KINDS))
    if unknown or not words:
        raise ValueError(
            f"--bench-warmup-after expects a comma list of {', '.join(SWITCH_KINDS)} (or all, none), got {text!r}"
        )
    return frozenset(words | {"start"})


def testbed_state(scenario: Scenario) -> tuple[Hashable, ...]:
    """What Testbed.prepare changes between scenarios: equal states run back to back."""
    return (scenario.backend, scenario.delay_ms, scenario.pool_up)


def switch_between(previous: Scenario | None, current: Scenario, seen: set[str]) -> tuple[str, ...]:
    """The switch kinds (SWITCH_KINDS) that open a block of `current` after one of `previous`."""
    if previous is None:
        return ("start",)
    kinds: list[str] = []
    if current.id not in seen:
        kinds.append("first")
    if previous.backend != current.backend:
        kinds.append("backend")
    if previous.delay_ms != current.delay_ms:
        kinds.append("delay")
    if previous.pool_up != current.pool_up:
        kinds.append("pool")
    if previous.network != current.network:
        kinds.append("network")
    if not kinds and previous.id != current.id:
        kinds.append("scenario")
    return tuple(kinds)


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
    warmup_after: frozenset[str] = DEFAULT_WARMUP_AFTER  # switch kinds whose block gets warm-ups
    group_by_state: bool = True  # run equal testbed states back to back within a round


@dataclass(frozen=True)
class Block:
    """`count` measured rounds of one scenario, after `warmup` discarded ones. `index` is the round
    of blocks it belongs to (interleaved), or its position (sequential)."""

    index: int
    scenario: str
    count: int
    warmup: int = 0
    burst: int = 1
    switch: tuple[str, ...] = ()  # what changed since the previous block (SWITCH_KINDS)

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
    warmup_after: frozenset[str] = DEFAULT_WARMUP_AFTER
    group_by_state: bool = False

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
            "switches": [list(b.switch) for b in self.blocks],
            "warmup_after": sorted(self.warmup_after),
            "group_by_state": self.group_by_state,
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
        warmup_after=getattr(options, "warmup_after", DEFAULT_WARMUP_AFTER),
        group_by_state=getattr(options, "group_by_state", True),
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
    group_of: Mapping[str, Hashable] | None = None,
) -> list[Block]:
    """Randomised complete blocks (see the module's docstring). Same seed, same order.

    `rounds` gives a scenario fewer rounds than `iterations` (bursts start N per round); a
    scenario drops out of later rounds once its rounds are done. `group_of` maps a scenario to its
    group key (a tuple: groups nest by its first element, then the whole key): scenarios of a group
    run back to back, groups and members in a fresh random order per round."""
    rng = random.Random(seed)
    remaining = {sid: (rounds or {}).get(sid, iterations) for sid in scenario_ids}
    blocks: list[Block] = []
    index = 0
    while any(n > 0 for n in remaining.values()):
        active = [sid for sid in scenario_ids if remaining[sid] > 0]
        if group_of is None:
            order = active
            rng.shuffle(order)
        else:
            order = _grouped_shuffle(active, group_of, rng, blocks[-1].scenario if blocks else None)
        for sid in order:
            count = min(block_size, remaining[sid])
            blocks.append(Block(index, sid, count))
            remaining[sid] -= count
        index += 1
    return blocks


def _grouped_shuffle(
    ids: Sequence[str], group_of: Mapping[str, Hashable], rng: random.Random, previous: str | None = None
) -> list[str]:
    """A random order in which members of a group are adjacent, and within a group, members of a
    sub-group (same full key) too: shuffle outer groups, then sub-groups, then members. The group
    (and sub-group) the previous round ended with opens this one, which saves a testbed switch per
    round; which group that is was itself drawn at random."""
    outer: dict[Hashable, dict[Hashable, list[str]]] = {}
    for sid in ids:
        key = group_of[sid]
        head = key[0] if isinstance(key, tuple) and key else key
        outer.setdefault(head, {}).setdefault(key, []).append(sid)
    groups = list(outer.values())
    rng.shuffle(groups)
    last_key = group_of.get(previous) if previous is not None else None
    last_head = last_key[0] if isinstance(last_key, tuple) and last_key else last_key
    heads = [next(iter(g.values())) for g in groups]
    for i, members in enumerate(heads):
        key = group_of[members[0]]
        if last_key is not None and (key[0] if isinstance(key, tuple) and key else key) == last_head:
            groups.insert(0, groups.pop(i))
            break
    order: list[str] = []
    for n, group in enumerate(groups):
        subgroups = list(group.values())
        rng.shuffle(subgroups)
        if n == 0 and last_key in group:
            subgroups.remove(group[last_key])
            subgroups.insert(0, group[last_key])
        for members in subgroups:
            members = list(members)
            rng.shuffle(members)
            order.extend(members)
    return order


def state_group(scenario: Scenario) -> tuple[Hashable, ...]:
    """Group key of the grouped order: the testbed state first, then the function's network."""
    return (testbed_state(scenario), scenario.network)


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
        groups = {s.id: state_group(s) for s in measured} if settings.group_by_state else None
        order = interleaved_order(list(by_id), settings.iterations, settings.block_size, seed, rounds, groups)
        blocks = _with_warmups([(b.index, by_id[b.scenario], b.count) for b in order], settings)
    else:
        blocks = _with_warmups([(i, s, rounds_for(s, settings.iterations)) for i, s in enumerate(measured)], settings)
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
        warmup_after=settings.warmup_after,
        group_by_state=settings.interleave and settings.group_by_state,
    )


def _with_warmups(order: Sequence[tuple[int, Scenario, int]], settings: PlanSettings) -> list[Block]:
    """Blocks with their switch and warm-ups: `warmup` before a scenario's first block (and the run's
    first), `block_warmup` before a later block opened by a switch in `warmup_after`, none otherwise."""
    blocks: list[Block] = []
    seen: set[str] = set()
    previous: Scenario | None = None
    for index, scenario, count in order:
        switch = switch_between(previous, scenario, seen)
        wanted = set(switch) & settings.warmup_after
        if "start" in switch or ("first" in wanted):
            warmup = settings.warmup
        elif wanted:
            warmup = settings.block_warmup
        else:
            warmup = 0
        blocks.append(Block(index, scenario.id, count, warmup, scenario.burst, switch))
        seen.add(scenario.id)
        previous = scenario
    return blocks


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
