"""Findings: plain sentences with their confidence intervals, each naming the scenarios it rests on.

Which pairs produce which sentence is declared in the catalogue (a Reference's `findings`); this
module only knows how each kind of finding is computed and worded."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..catalogue import CONNECT_SPEEDUP, LIFECYCLE_SAVING, PREDICTABILITY, Catalogue
from .compare import two_sample_estimate
from .stats import json_safe


def _ci_text(ci: Sequence[float] | None, unit: str, digits: int = 1) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "CI n/a"
    return f"95% CI {ci[0]:.{digits}f} to {ci[1]:.{digits}f}{unit}"


class _Findings:
    def __init__(
        self,
        values: Mapping[str, Mapping[str, np.ndarray]],
        summary_scenarios: Mapping[str, Any],
        command: str | None,
        resamples: int,
        seed: int,
    ) -> None:
        self.values = values
        self.scenarios = summary_scenarios
        self.command = command
        self.resamples = resamples
        self.seed = seed
        self.out: list[dict[str, Any]] = []

    def add(self, topic: str, text: str, estimate: float, ci: Any, unit: str, based_on: list[str]) -> None:
        self.out.append(
            {"topic": topic, "text": text, "estimate": estimate, "ci": ci, "unit": unit, "scenarios": based_on}
            | ({"command": self.command} if self.command else {})
        )

    def have(self, *names: str) -> bool:
        return all(n in self.values and self.values[n]["lifecycle_ms"].size >= 2 for n in names)

    def lifecycle_saving(self, topic: str, slow: str, fast: str, subject: str) -> None:
        """What `fast` saves against `slow` (median difference); a negative saving is reported as a cost."""
        d, ci = two_sample_estimate(
            self.values[slow]["lifecycle_ms"],
            self.values[fast]["lifecycle_ms"],
            "median",
            "diff",
            resamples=self.resamples,
            seed=self.seed,
        )
        base = float(np.median(self.values[slow]["lifecycle_ms"]))
        verb = f"saves {d:.1f} ms" if d >= 0 else f"costs {-d:.1f} ms more"
        unclear = not ci or ci[0] <= 0 <= ci[1]
        tail = " — not distinguishable from zero at this sample size" if unclear else ""
        self.add(
            topic,
            f"{subject} {verb} per cold start ({abs(d) / base:.1%} of {slow}'s median lifecycle {base:.1f} ms; "
            f"median {slow} − median {fast} = {d:.1f} ms, {_ci_text(ci, ' ms')}){tail}.",
            d,
            ci,
            "ms",
            [slow, fast],
        )

    def connect_speedup(self, topic: str, slow: str, fast: str) -> None:
        a, b = self.values[fast]["connect_us"], self.values[slow]["connect_us"]
        if a.size < 2 or b.size < 2:
            return
        ratio, ci = two_sample_estimate(b, a, "median", "ratio", resamples=self.resamples, seed=self.seed)
        self.add(
            topic,
            f"Getting a usable connection is {ratio:.1f}× faster with {fast} than {slow} "
            f"(median connect {np.median(a):.0f} µs vs {np.median(b):.0f} µs, ratio {_ci_text(ci, '×')}).",
            ratio,
            ci,
            "x",
            [slow, fast],
        )

    def predictability(self, topic: str, slow: str, fast: str, subject: str) -> None:
        v_d = self.scenarios[slow]["lifecycle_ms"]
        v_s = self.scenarios[fast]["lifecycle_ms"]
        self.add(
            topic,
            f"Lifecycle variance is {v_s['variance']:.2f} ms² with {subject or fast} vs {v_d['variance']:.2f} ms² "
            f"{slow}; "
            f"p99 {v_s['p99']:.1f} vs {v_d['p99']:.1f} ms (see the Levene / Brown–Forsythe comparisons).",
            (v_s["variance"] or math.nan) / (v_d["variance"] or math.nan) if v_d["variance"] else math.nan,
            None,
            "ratio",
            [slow, fast],
        )

    def delay_slope(self, fit: Mapping[str, Any]) -> None:
        self.add(
            "delay",
            f"Each millisecond of handshake delay adds {fit['slope']:.2f} ms to a direct cold start "
            f"({_ci_text(fit['slope_ci'], ' ms/ms', 2)}; a slope of 1 means the delay reaches the lifecycle "
            f"undiminished), fitted over {', '.join(fit['scenarios'])}.",
            fit["slope"],
            fit["slope_ci"],
            "ms/ms",
            list(fit["scenarios"]),
        )

    def burst_scaling(self, one: str, top: str, n_top: int) -> None:
        ratio, ci = two_sample_estimate(
            self.values[top]["lifecycle_ms"],
            self.values[one]["lifecycle_ms"],
            "median",
            "ratio",
            resamples=self.resamples,
            seed=self.seed,
        )
        many = float(np.median(self.values[top]["lifecycle_ms"]))
        alone = float(np.median(self.values[one]["lifecycle_ms"]))
        self.add(
            "burst",
            f"Started {n_top} at once, a direct cold start takes {many:.1f} ms (median) against {alone:.1f} ms "
            f"alone: {ratio:.2f}× ({_ci_text(ci, '×', 2)}); a ratio well above 1 is the serialised start-up of "
            "thesis Fig. 2.",
            ratio,
            ci,
            "x",
            [one, top],
        )


def build_findings(
    values: Mapping[str, Mapping[str, np.ndarray]],
    summary_scenarios: Mapping[str, Any],
    fits: Mapping[str, Any],
    environment: Mapping[str, Any],
    catalogue: Catalogue,
    *,
    resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Every declared finding whose scenarios ran (with at least two successful starts each), in
    catalogue order; then the primary delay fit's slope and the burst scaling."""
    f = _Findings(values, summary_scenarios, environment.get("command"), resamples, seed)
    present = list(values)
    for scenario in catalogue:
        if scenario.id not in values:
            continue
        for ref in catalogue.references_of(scenario.id, present):
            for finding in ref.findings:
                if not f.have(ref.scenario, scenario.id):
                    continue
                if finding.kind == LIFECYCLE_SAVING:
                    f.lifecycle_saving(finding.topic, ref.scenario, scenario.id, finding.subject)
                elif finding.kind == CONNECT_SPEEDUP:
                    f.connect_speedup(finding.topic, ref.scenario, scenario.id)
                elif finding.kind == PREDICTABILITY:
                    f.predictability(finding.topic, ref.scenario, scenario.id, finding.subject)
                else:
                    raise ValueError(f"{scenario.id}: unknown finding kind {finding.kind!r}")
    fit = fits.get("lifecycle_ms")
    if fit and fit.get("slope") is not None:
        f.delay_slope(fit)
    for label in catalogue.burst_scaling:
        curve: dict[int, str] = {}
        for name in present:
            s = catalogue.get(name)
            if s is not None and s.burst_series == label and f.have(name):
                curve[s.burst] = name
        if 1 in curve and len(curve) > 1:
            top = max(curve)
            f.burst_scaling(curve[1], curve[top], top)
    return json_safe(f.out)  # type: ignore[no-any-return]
