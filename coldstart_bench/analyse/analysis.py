"""A run's analysis: its typed result (results.RunResult, what summary.json holds) plus the live
objects the plugin acts on (gate results, expectation verdicts, comparisons)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..results import RunResult
from .expectations import verdicts_fail

if TYPE_CHECKING:
    from .compare import Comparison  # scipy: loaded by whoever made the comparisons
    from .expectations import Verdict
    from .gate import GateResult


@dataclass
class RunAnalysis:
    """A run's result plus the live objects the plugin acts on (gate, verdicts, comparisons)."""

    result: RunResult
    gate_results: list[GateResult]
    verdicts: list[Verdict]
    warnings: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    expectation_policy: str = "report"

    @cached_property
    def summary(self) -> dict[str, Any]:
        """summary.json's content."""
        return self.result.to_dict()

    @property
    def gate_failed(self) -> bool:
        return any(not g.passed for g in self.gate_results)

    @property
    def expectations_failed(self) -> bool:
        return verdicts_fail(self.verdicts, self.expectation_policy)

    @property
    def failed(self) -> bool:
        return self.gate_failed or self.expectations_failed
