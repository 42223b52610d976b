"""The typed, versioned result model of a run, as written to and loaded from summary.json.

The bottom floor of the package: it imports no other module of it at run time, so the analysis,
the baseline, the gate, the reports and a later command line (`coldstart-bench report RUN_DIR`)
can all use it, without pytest or Docker.

Version history: 1 — the first summary.json; 2 — each scenario carries its declared catalogue
metadata (`declared`) and the run records its campaign plan (`plan`); optional keys within 2:
`connect_breakdown`, `harness_time`, `languages`, `pg_proxy`, `tls`, `unsupported`, `round_trips`; 3 — findings
are judged as one
family (`findings[]` gain significant, p_value, p_adjusted, ci_adjusted, confidence_adjusted, estimator;
`family` states the level), warnings also come grouped per rule (`warning_groups`), and the run records
the lower-variance estimator (`effects`), sample-size plans (`planning`) and its stopping rule
(`stopping`, when one was set).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .analyse.compare import Comparison
    from .analyse.expectations import Verdict
    from .analyse.gate import GateResult

SUMMARY_VERSION = 3
READABLE_VERSIONS: tuple[int, ...] = (1, 2, 3)
SUMMARY_FILE = "summary.json"


class ResultFormatError(ValueError):
    """summary.json cannot be read as a run result; the message names the file and why."""


@dataclass
class EnvironmentRecord:
    """What a run was measured on and how it was run. Unset fields are left out of summary.json;
    `extra` keeps keys this version does not know (from a newer writer, or a plugin)."""

    started_utc: str | None = None
    finished_utc: str | None = None
    hostname: str | None = None
    kernel: str | None = None
    os: str | None = None
    machine: str | None = None
    cpu_count: int | None = None
    python: str | None = None
    harness_commit: str | None = None
    loadavg_start: Any = None
    loadavg_end: Any = None
    steal_pct: float | None = None
    cgroup_version_host: str | None = None
    docker_server: str | None = None
    docker_api: str | None = None
    containerd: str | None = None
    runc: str | None = None
    default_runtime: str | None = None
    runtimes: list[str] | None = None
    storage_driver: str | None = None
    cgroup_version: str | None = None
    cgroup_driver: str | None = None
    engine_cpus: int | None = None
    engine_memory_bytes: int | None = None
    docker_error: str | None = None
    base_image: str | None = None
    base_route: str | None = None
    run_id: str | None = None
    command: str | None = None
    iterations: int | None = None
    warmup: int | None = None
    pool_size: int | None = None
    delay_backend: str | None = None
    delay_backends_by_scenario: dict[str, str] = field(default_factory=dict)
    pg_transfers_checked: int | None = None
    # Server sessions PostgreSQL opened while each arm ran (pg_stat_database.sessions across its
    # blocks, pool refills settled): {scenario: {"sessions", "cold_starts", "blocks"}}.
    pg_sessions_by_scenario: dict[str, dict[str, int]] = field(default_factory=dict)
    interleave: dict[str, Any] | None = None
    campaign_timing: dict[str, Any] | None = None  # measure.executor.CampaignTiming.to_dict()
    extra: dict[str, Any] = field(default_factory=dict)

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(self)} - {"extra"}
        for key, value in values.items():
            if key in known:
                setattr(self, key, value)
            else:
                self.extra[key] = value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None or (f.name in ("delay_backends_by_scenario", "pg_sessions_by_scenario") and not value):
                continue
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, values: Any) -> EnvironmentRecord:
        record = cls()
        if isinstance(values, EnvironmentRecord):
            record.update(values.to_dict())
        elif values:
            record.update(dict(values))
        return record

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style read, for code that treats the environment as key/value pairs."""
        return self.to_dict().get(key, default)


# Summary fields of a scenario that are not per-metric statistics.
_SCENARIO_SCALARS = ("n", "ok", "failed", "delay_ms", "mode", "network", "burst", "paths", "interfaces", "blocks")


@dataclass
class ScenarioResult:
    """One scenario's statistics (per metric: describe() fields), counts, phases and its declared
    catalogue metadata (empty when it was not in the catalogue, or for a version 1 file)."""

    id: str
    n: int
    ok: int
    failed: int
    delay_ms: float = 0.0
    mode: str = ""
    network: str = ""
    burst: int = 1
    paths: dict[str, int] = field(default_factory=dict)
    interfaces: dict[str, int] = field(default_factory=dict)
    blocks: int = 0
    phases: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    declared: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        out.update({k: getattr(self, k) for k in _SCENARIO_SCALARS})
        out["phases"] = self.phases
        out["declared"] = self.declared
        return out

    @classmethod
    def from_dict(cls, scenario_id: str, d: dict[str, Any]) -> ScenarioResult:
        try:
            scalars = {k: d[k] for k in ("n", "ok", "failed")}
        except KeyError as exc:
            raise ResultFormatError(f"scenario {scenario_id!r} lacks {exc.args[0]!r}") from None
        rest = {k: d[k] for k in _SCENARIO_SCALARS[3:] if k in d}
        nested = ("paths", "interfaces", "phases", "declared")
        metrics = {k: v for k, v in d.items() if isinstance(v, dict) and k not in nested}
        return cls(
            id=scenario_id,
            **scalars,
            **rest,
            phases=dict(d.get("phases") or {}),
            metrics=metrics,
            declared=dict(d.get("declared") or {}),
        )


@dataclass
class RunResult:
    """Everything summary.json holds about one run."""

    # per scenario: counts, per-metric statistics, phases, declared catalogue metadata
    scenarios: dict[str, ScenarioResult]
    environment: EnvironmentRecord  # what the run was measured on and how it was run
    # alpha, bootstrap resamples, seed, expectation policy, max regression, baseline
    analysis: dict[str, Any] = field(default_factory=dict)
    # each scenario against its references: ratio of medians, Mann-Whitney, Cliff's delta, Levene, Brown-Forsythe
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    # lifecycle against configured SYN-ACK delay: slope and interval per delay series
    delay_fit: dict[str, Any] = field(default_factory=dict)
    # per-block paired differences of medians (interleaved runs)
    paired_blocks: list[dict[str, Any]] = field(default_factory=list)
    # the declared expectations (bench_expect) and their verdicts
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    gate: list[dict[str, Any]] = field(default_factory=list)  # absolute rules and baseline regressions: OK / FAIL each
    # noise and validity warnings, one line each (grouped in warning_groups)
    warnings: list[str] = field(default_factory=list)
    # plain-sentence findings judged as one family: effect, family-wise interval, significant
    findings: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] | None = None  # the run's order: seed, blocks, warm-ups
    # Scenarios a runtime cannot run (e.g. an injected TCP fd on gVisor): [{scenario, reason}], never measured.
    unsupported: list[dict[str, Any]] = field(default_factory=list)
    # phase medians of connect_us per socket scenario, prefetch cost
    connect_breakdown: dict[str, Any] = field(default_factory=dict)
    arm_phases: dict[str, Any] = field(default_factory=dict)  # the phases every arm reports alike, per scenario
    # wall time per measured cold start and where it went, warm-up evidence
    harness_time: dict[str, Any] = field(default_factory=dict)
    version: int = SUMMARY_VERSION  # format version of this file
    languages: list[dict[str, Any]] = field(default_factory=list)  # the language table (analyse/wire_tables.py)
    pg_proxy: list[dict[str, Any]] = field(default_factory=list)  # direct vs PgBouncer vs injected session
    tls: dict[str, Any] | None = None  # TLS connect set-up (the thesis's Table 1 re-measured), if TLS ran
    # warnings grouped per rule: one line naming every scenario it fired for
    warning_groups: list[dict[str, Any]] = field(default_factory=list)
    # the family the findings are judged in: size, alpha, per-finding level
    family: dict[str, Any] = field(default_factory=dict)
    # lower-variance estimator (start->die) per headline pair, engine-phase check
    effects: dict[str, Any] = field(default_factory=dict)
    # cold starts per arm needed to resolve the connection saving at 80 % power
    planning: list[dict[str, Any]] = field(default_factory=list)
    stopping: dict[str, Any] | None = None  # the stopping rule's record, when one was set
    # per --bench-rtt variant: median connect in round trips, and what the distance added
    round_trips: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "scenarios": {k: v.to_dict() for k, v in self.scenarios.items()},
            "environment": self.environment.to_dict(),
            "analysis": self.analysis,
            "comparisons": self.comparisons,
            "delay_fit": self.delay_fit,
            "paired_blocks": self.paired_blocks,
            "verdicts": self.verdicts,
            "gate": self.gate,
            "warnings": self.warnings,
            "findings": self.findings,
        }
        if self.version >= 3:
            out |= {
                "warning_groups": self.warning_groups,
                "family": self.family,
                "effects": self.effects,
                "planning": self.planning,
            }
        if self.plan is not None:
            out["plan"] = self.plan
        if self.unsupported:
            out["unsupported"] = self.unsupported
        if self.languages:
            out["languages"] = self.languages
        if self.pg_proxy:
            out["pg_proxy"] = self.pg_proxy
        if self.connect_breakdown:
            out["connect_breakdown"] = self.connect_breakdown
        if self.arm_phases:
            out["arm_phases"] = self.arm_phases
        if self.harness_time:
            out["harness_time"] = self.harness_time
        if self.tls is not None:
            out["tls"] = self.tls
        if self.stopping is not None:
            out["stopping"] = self.stopping
        if self.round_trips:
            out["round_trips"] = self.round_trips
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: Any, source: str = "summary") -> RunResult:
        if not isinstance(d, dict):
            raise ResultFormatError(f"{source} is not a JSON object")
        version = d.get("version")
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise ResultFormatError(
                f"{source} has summary version {version!r}, which this coldstart-bench cannot read "
                f"(it reads versions {', '.join(map(str, READABLE_VERSIONS))}); use the version that wrote it"
            )
        scenarios = d.get("scenarios") or {}
        if not isinstance(scenarios, dict):
            raise ResultFormatError(f"{source}: 'scenarios' is not an object")
        try:
            return cls(
                version=int(version),
                scenarios={k: ScenarioResult.from_dict(k, v) for k, v in scenarios.items()},
                environment=EnvironmentRecord.from_dict(d.get("environment") or {}),
                analysis=dict(d.get("analysis") or {}),
                comparisons=list(d.get("comparisons") or []),
                delay_fit=dict(d.get("delay_fit") or {}),
                paired_blocks=list(d.get("paired_blocks") or []),
                verdicts=list(d.get("verdicts") or []),
                gate=list(d.get("gate") or []),
                warnings=list(d.get("warnings") or []),
                findings=list(d.get("findings") or []),
                plan=d.get("plan"),
                unsupported=list(d.get("unsupported") or []),
                languages=list(d.get("languages") or []),
                pg_proxy=list(d.get("pg_proxy") or []),
                connect_breakdown=dict(d.get("connect_breakdown") or {}),
                arm_phases=dict(d.get("arm_phases") or {}),
                harness_time=dict(d.get("harness_time") or {}),
                tls=d.get("tls"),
                warning_groups=list(d.get("warning_groups") or []),
                family=dict(d.get("family") or {}),
                effects=dict(d.get("effects") or {}),
                planning=list(d.get("planning") or []),
                stopping=d.get("stopping"),
                round_trips=list(d.get("round_trips") or []),
            )
        except ResultFormatError as exc:
            raise ResultFormatError(f"{source}: {exc}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ResultFormatError(f"{source} is malformed: {exc}") from None


def load_result(path: Path) -> RunResult:
    """Read a run's summary.json (or the run directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ResultFormatError(f"{path} is not valid JSON: {exc}") from None
    return RunResult.from_dict(data, source=str(path))


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
        from .analyse.expectations import verdicts_fail

        return verdicts_fail(self.verdicts, self.expectation_policy)

    @property
    def failed(self) -> bool:
        return self.gate_failed or self.expectations_failed
