from __future__ import annotations

import numpy as np
import pytest

from coldstart_bench.analyse.compare import holm, mann_whitney
from coldstart_bench.analyse.familywise import family_findings
from coldstart_bench.analyse.phase_effects import (
    ENGINE_PHASES,
    block_differences,
    comparison_name,
    effect_comparisons,
    engine_phase_checks,
    side_by_side_text,
)

BLOCKS, PER_BLOCK = 60, 5
Run = tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, dict[int, np.ndarray]]]]


def _arm(rng: np.random.Generator, run_shift: float, create_shift: float = 0.0) -> dict[str, np.ndarray]:
    """Lifecycle-like cold starts: Docker's create→start (SD 33 ms) dominates, start→die SD 18 ms."""
    n = BLOCKS * PER_BLOCK
    create = 200 + create_shift + rng.normal(0, 33, n)
    run = 180 + run_shift + rng.normal(0, 18, n)
    destroy = 60 + rng.normal(0, 10, n)
    return {
        "create_to_start_ms": create,
        "start_to_die_ms": run,
        "die_to_destroy_ms": destroy,
        "lifecycle_ms": create + run + destroy,
    }


def _by_block(arm: dict[str, np.ndarray]) -> dict[str, dict[int, np.ndarray]]:
    return {m: {b: v[b * PER_BLOCK : (b + 1) * PER_BLOCK] for b in range(BLOCKS)} for m, v in arm.items()}


@pytest.fixture
def run() -> Run:
    rng = np.random.default_rng(42)
    values = {"direct": _arm(rng, 8.0), "socket": _arm(rng, 0.0), "slowengine": _arm(rng, 0.0, create_shift=40.0)}
    return values, {name: _by_block(arm) for name, arm in values.items()}


def test_effect_comparisons_pair_blocks_when_interleaved(run: Run) -> None:
    values, blocks = run
    paired = effect_comparisons("direct", "socket", values, blocks)
    assert [c.name for c in paired] == [
        comparison_name("direct", "socket", "lifecycle_ms"),
        comparison_name("direct", "socket", "start_to_die_ms"),
    ]
    assert all(c.design == "paired-blocks" for c in paired)
    d = block_differences("direct", "socket", "start_to_die_ms", blocks)
    assert d is not None and len(d) == BLOCKS
    assert d[0] == pytest.approx(
        np.median(blocks["direct"]["start_to_die_ms"][0]) - np.median(blocks["socket"]["start_to_die_ms"][0])
    )
    unpaired = effect_comparisons("direct", "socket", values)
    assert all(c.design == "two-sample" for c in unpaired)
    few = {s: {m: dict(list(v.items())[:3]) for m, v in arms.items()} for s, arms in blocks.items()}
    assert block_differences("direct", "socket", "lifecycle_ms", few) is None


def test_start_to_die_resolves_what_the_lifecycle_cannot(run: Run) -> None:
    values, blocks = run
    results = {r.name: r for r in family_findings(effect_comparisons("direct", "socket", values, blocks))}
    life = results[comparison_name("direct", "socket", "lifecycle_ms")]
    run_phase = results[comparison_name("direct", "socket", "start_to_die_ms")]
    assert life.ci_adjusted is not None and run_phase.ci_adjusted is not None
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(run_phase.ci_adjusted) < 0.7 * width(life.ci_adjusted)
    assert run_phase.significant and not life.significant
    text = side_by_side_text("direct", "socket", results, values)
    assert text is not None
    assert "On start→die (SD 1" in text and "injection saves" in text
    assert "On the whole lifecycle, injection: socket and direct are not distinguishable" in text
    assert side_by_side_text("direct", "other", results, values) is None


def test_engine_phases_alike_say_nothing(run: Run) -> None:
    values, _ = run
    (check,) = engine_phase_checks([("socket", "direct")], values)
    assert [t.phase for t in check.tests] == list(ENGINE_PHASES)
    assert not check.differ and check.sentence is None
    assert check.to_dict()["differ"] is False


def test_engine_phase_difference_is_stated_with_holm_over_all_tests(run: Run) -> None:
    values, _ = run
    checks = engine_phase_checks([("socket", "direct"), ("slowengine", "direct")], values, alpha=0.05)
    raw = [mann_whitney(values[a][p], values["direct"][p])[1] for a in ("socket", "slowengine") for p in ENGINE_PHASES]
    got = [t.p_adjusted for c in checks for t in c.tests]
    assert got == pytest.approx(holm(raw))
    slow = checks[1]
    assert slow.differ and [t.phase for t in slow.tests if t.differs] == ["create_to_start_ms"]
    assert slow.sentence is not None
    assert slow.sentence.startswith("The container engine's phases differ between slowengine and direct")
    assert "create_to_start_ms" in slow.sentence and "die_to_destroy_ms" not in slow.sentence


def test_engine_phase_check_skips_missing_phases_and_rejects_bad_alpha() -> None:
    values = {"a": {"create_to_start_ms": [1.0, 2.0, 3.0]}, "b": {"create_to_start_ms": [1.0, 2.0, 3.5]}}
    (check,) = engine_phase_checks([("a", "b")], values)
    assert len(check.tests) == 1 and "die_to_destroy_ms" in check.notes[0]
    with pytest.raises(ValueError, match="alpha"):
        engine_phase_checks([("a", "b")], values, alpha=0)
