"""Two things a run says about itself: where a socket scenario's connect_us goes (the acquire's
phases), and where the harness's wall time goes (the wall/lifecycle ratio, and whether a cold start
right after a switch of the testbed is slower than the ones after it: the data the warm-up policy of
the plan is decided from)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from ..samples import ACQUIRE_PHASES, Sample, group_by_scenario
from .stats import json_safe, percentile_interval

# On the function's path next to the acquire's phases: the fd check (verify_us, inside connect_us),
# the pool client's import (library_load_us, outside it) and the prefetch every mode pays first.
AROUND_CONNECT: tuple[str, ...] = ("fd_check_us", "protocol_import_us", "prefetch_us", "prefetch_bytes")
OTHER = "acquire_other_us"  # acquire_us − the five phases: call overhead, closing the Unix socket
# The phases named alike in every arm (coldstart_bench/phases.py), per scenario, in this order.
ARM_PHASES: tuple[str, ...] = (
    "runtime_start_us",
    "library_load_us",
    "acquire_us",
    "verify_us",
    "session_setup_us",
    "connect_us",
    "connection_total_us",
    "first_request_us",
    "time_to_first_reply_us",
    "function_us",
)
# A switch perturbs the next start when the first cold start of its blocks is slower than the
# later ones of the same block, one-sided, at this level, over at least MIN_BLOCKS blocks.
MIN_BLOCKS = 5


def _median(values: Sequence[float]) -> float | None:
    clean = [v for v in values if math.isfinite(v)]
    return float(np.median(clean)) if clean else None


def connect_breakdown(samples: Sequence[Sample]) -> dict[str, Any]:
    """Medians of connect_us and of each acquire phase, per scenario whose cold starts took the socket
    path and reported phases; the prefetch cost (µs, bytes) per scenario that reported it."""
    out: dict[str, Any] = {}
    for name, group in group_by_scenario(samples).items():
        ok = [s for s in group.samples if s.ok]
        socket = [s for s in ok if s.path == "socket" and all(math.isfinite(s.value(p)) for p in ACQUIRE_PHASES)]
        entry: dict[str, Any] = {}
        if socket:
            others = [s.acquire_us - sum(s.value(p) for p in ACQUIRE_PHASES) for s in socket]
            entry.update(n=len(socket), connect_us=_median([s.connect_us for s in socket]))
            entry.update({p: _median([s.value(p) for s in socket]) for p in ACQUIRE_PHASES})
            entry[OTHER] = _median(others)
            recv, connect = entry["reply_recv_us"], entry["connect_us"]
            entry["reply_recv_share"] = recv / connect if recv is not None and connect else None
        for key in AROUND_CONNECT:
            value = _median([s.value(key) for s in ok])
            if value is not None:
                entry[key] = value
        if entry:
            entry.setdefault("n", len(ok))
            out[name] = entry
    return json_safe(out)


def arm_phases(samples: Sequence[Sample]) -> dict[str, Any]:
    """Per scenario: the medians of the phases every arm reports alike (ARM_PHASES), the library the
    connection ran through, and how many successful cold starts reported them."""
    out: dict[str, Any] = {}
    for name, group in group_by_scenario(samples).items():
        ok = [s for s in group.samples if s.ok and math.isfinite(s.connection_total_us)]
        if not ok:
            continue
        entry: dict[str, Any] = {"n": len(ok), "path": ok[0].path, "library": ok[0].library}
        entry.update({p: _median([s.value(p) for s in ok]) for p in ARM_PHASES})
        out[name] = entry
    return json_safe(out)


def _blocks(samples: Sequence[Sample]) -> dict[tuple[str, int], list[Sample]]:
    by_block: dict[tuple[str, int], list[Sample]] = {}
    for s in samples:
        if s.ok and s.position >= 0 and s.burst == 1 and math.isfinite(s.lifecycle_ms):
            by_block.setdefault((s.scenario, s.block), []).append(s)
    return by_block


def warmup_evidence(
    samples: Sequence[Sample], *, alpha: float = 0.05, resamples: int = 2000, seed: int = 12345
) -> dict[str, Any]:
    """Per switch kind: in every block it opened that holds at least two measured single cold starts,
    lifecycle of the block's first measured start minus the median of its later ones. `perturbs`:
    the excess is positive (one-sided Wilcoxon signed-rank at `alpha`, at least MIN_BLOCKS blocks).
    `first_position` says whether the first measured start came right after the switch (0) or after
    warm-ups (> 0): the evidence for a warm-up comes from a run with `--bench-block-warmup 0`."""
    excess: dict[str, list[float]] = {}
    relative: dict[str, list[float]] = {}
    positions: dict[str, set[int]] = {}
    for members in _blocks(samples).values():
        members = sorted(members, key=lambda s: s.position)
        if len(members) < 2:
            continue
        first, rest = members[0], [s.lifecycle_ms for s in members[1:]]
        later = float(np.median(rest))
        kinds = [k for k in first.after_switch.split(";") if k] or ["none"]
        for kind in kinds:
            excess.setdefault(kind, []).append(first.lifecycle_ms - later)
            relative.setdefault(kind, []).append((first.lifecycle_ms - later) / later if later else math.nan)
            positions.setdefault(kind, set()).add(first.position)
    out: dict[str, Any] = {}
    for kind, diffs in sorted(excess.items()):
        d = np.asarray(diffs)
        p = math.nan
        if d.size >= MIN_BLOCKS and np.any(d != 0):
            p = float(sps.wilcoxon(d, zero_method="wilcox", alternative="greater").pvalue)
        ci = None
        if resamples > 0 and d.size >= 2 and np.ptp(d) > 0:
            reps = np.median(d[np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))], axis=1)
            ci = percentile_interval(reps, 0.95)
        out[kind] = {
            "blocks": int(d.size),
            "first_position": sorted(positions[kind]),
            "median_excess_ms": float(np.median(d)),
            "median_excess_ci": ci,
            "median_excess_rel": float(np.nanmedian(relative[kind])),
            "wilcoxon_greater_p": p,
            "perturbs": bool(math.isfinite(p) and p < alpha),
        }
    return json_safe(out)


def harness_time(
    samples: Sequence[Sample], environment: Mapping[str, Any], plan: Mapping[str, Any] | None, *, alpha: float = 0.05
) -> dict[str, Any]:
    """The run's wall/lifecycle ratio and where its wall time went (from the executor's timing in the
    environment), the warm-up policy it ran with, and the evidence for that policy from its samples."""
    out: dict[str, Any] = {}
    timing = environment.get("campaign_timing")
    if isinstance(timing, Mapping):
        out.update(timing)
        measured = [s for s in samples if s.ok and math.isfinite(s.lifecycle_ms)]
        gaps = _gaps_ms(samples)
        if gaps:
            out["gap_between_starts_ms_median"] = float(np.median(gaps))
        out["measured_ok"] = len(measured)
    if plan:
        out["warmup_after"] = plan.get("warmup_after")
        out["block_warmup"] = plan.get("block_warmup")
        out["group_by_state"] = plan.get("group_by_state")
        switches = plan.get("switches") or []
        out["switches"] = sum(1 for s in switches if s and s not in (["start"], ["scenario"]))
    evidence = warmup_evidence(samples, alpha=alpha)
    if evidence:
        out["warmup_evidence"] = evidence
    return json_safe(out)


def _gaps_ms(samples: Sequence[Sample]) -> list[float]:
    """Engine time between one measured cold start's destroy and the next one's create, within a
    block (consecutive positions): the harness's own time between two starts."""
    gaps = []
    for members in _blocks(samples).values():
        members = sorted(members, key=lambda s: s.position)
        for a, b in itertools.pairwise(members):
            if b.position == a.position + 1 and a.t_create_ns and b.t_create_ns:
                gaps.append((b.t_create_ns - a.t_create_ns) / 1e6 - a.lifecycle_ms)
    return gaps
