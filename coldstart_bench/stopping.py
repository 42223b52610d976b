"""The stopping rule as the executor's StopPolicy: after every round of interleaved blocks it looks at
each headline comparison's per-block differences, asks `analyse.sequential.StoppingRule` whether the
run has reached its precision or spent its budget, and otherwise plans one more round.

Headline comparisons are the catalogue's headline references among the planned scenarios, on the
lifecycle (what a cold start costs). The record (summary.json `stopping`) names them, so a re-analysis
from samples.csv can rebuild the confidence sequences.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .analyse.compare import paired_blocks
from .analyse.sequential import Look, StoppingOptions, StoppingRule
from .catalogue import Catalogue
from .plan import Block, Plan
from .samples import Sample

STOP_METRIC = "lifecycle_ms"


@dataclass(frozen=True)
class Headline:
    """A headline comparison a − b on `metric`."""

    a: str
    b: str
    metric: str = STOP_METRIC

    @property
    def name(self) -> str:
        return f"{self.a} − {self.b} {self.metric}"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "a": self.a, "b": self.b, "metric": self.metric}


def headline_pairs(catalogue: Catalogue, scenario_ids: Sequence[str]) -> list[Headline]:
    """Every (scenario, headline reference) pair among `scenario_ids`, in plan order."""
    out = []
    for sid in scenario_ids:
        for ref in catalogue.references_of(sid, scenario_ids):
            if ref.headline:
                out.append(Headline(sid, ref.scenario))
    return out


def block_values(samples: Sequence[Sample], metric: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for s in samples:
        v = s.value(metric)
        if s.ok and v == v:
            out.setdefault(s.block, []).append(v)
    return out


def looks_of(headlines: Sequence[Headline], measured: Mapping[str, Sequence[Sample]]) -> dict[str, Look]:
    """Per headline comparison: its per-block differences of medians and the reference arm's median."""
    looks = {}
    for h in headlines:
        a, b = block_values(measured.get(h.a, ()), h.metric), block_values(measured.get(h.b, ()), h.metric)
        res = paired_blocks(h.a, a, h.b, b, h.metric) if a and b else None
        diffs = [float(x) for x in res["diffs"]] if res else []
        ref = [v for vals in b.values() for v in vals]
        looks[h.name] = Look(diffs, float(np.median(ref)) if ref else None, "ms")
    return looks


class PrecisionStopPolicy:
    """StopPolicy (measure.executor) driven by a StoppingRule; `write` gets the live half-width line."""

    def __init__(
        self,
        rule: StoppingRule,
        headlines: Sequence[Headline],
        *,
        seed: int,
        block_size: int,
        block_warmup: int,
        write: Callable[[str], None] = lambda _line: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not headlines:
            raise ValueError("the stopping rule needs a headline comparison among the selected scenarios")
        self.rule = rule
        self.headlines = list(headlines)
        self.seed = seed
        self.block_size = block_size
        self.block_warmup = block_warmup
        self.write = write
        self.clock = clock
        self.started = clock()
        self.rounds_added = 0

    @classmethod
    def from_options(
        cls, options: StoppingOptions, headlines: Sequence[Headline], *, alpha: float, **kwargs: Any
    ) -> PrecisionStopPolicy:
        return cls(StoppingRule.from_options(options, alpha=alpha), headlines, **kwargs)

    def start(self) -> None:
        """The time budget counts from here (after images and testbed are up)."""
        self.started = self.clock()

    @property
    def stopped(self) -> bool:
        return bool(self.rule.history and self.rule.history[-1].stop)

    def stop_after_round(self, round_index: int, measured: Mapping[str, Sequence[Sample]]) -> bool:
        cold_starts = sum(len(v) for v in measured.values())
        decision = self.rule.update(
            looks_of(self.headlines, measured), cold_starts=cold_starts, elapsed_s=self.clock() - self.started
        )
        self.write(f"[coldstart-bench] round {round_index}: {decision.progress_text()}")
        return decision.stop

    def more_rounds(self, plan: Plan, measured: Mapping[str, Sequence[Sample]]) -> list[Block]:
        """One more round: every scenario once, in a fresh order drawn from the plan's seed."""
        if self.stopped or not plan.scenarios:
            return []
        index = max((b.index for b in plan.blocks), default=-1) + 1
        order = list(plan.scenarios)
        random.Random(f"{self.seed}:{index}").shuffle(order)
        self.rounds_added += 1
        return [Block(index, s.id, self.block_size, self.block_warmup, s.burst) for s in order]

    def record(self) -> dict[str, Any]:
        out = self.rule.record()
        out["headline"] = [h.to_dict() for h in self.headlines]
        out["rounds_added"] = self.rounds_added
        return out
