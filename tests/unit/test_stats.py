from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from synthetic_samples import DESCRIBE_FIELDS, scenario_samples

from coldstart_bench.analyse.stats import (
    STAT_NAMES,
    bootstrap_ci,
    count_outside,
    describe,
    json_safe,
    statistic,
    values_by_scenario,
)

ONE_TO_TEN = [float(x) for x in range(1, 11)]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mean", 5.5),
        ("median", 5.5),
        ("p50", 5.5),
        ("p95", 9.55),  # linear interpolation: 1 + 0.95 × 9 = 9.55th position
        ("p99", 9.91),
        ("variance", 55.0 / 6.0),  # sum of squared deviations 82.5 / (n − 1)
        ("stdev", math.sqrt(55.0 / 6.0)),
    ],
)
def test_statistic_known_values(name: str, expected: float) -> None:
    assert statistic(ONE_TO_TEN, name) == pytest.approx(expected)


def test_statistic_ignores_nan_and_handles_small_inputs() -> None:
    assert statistic([1.0, math.nan, 3.0], "mean") == 2.0
    assert math.isnan(statistic([], "median"))
    assert math.isnan(statistic([4.0], "variance"))
    assert statistic([4.0], "p99") == 4.0
    with pytest.raises(ValueError, match="unknown statistic 'p42'"):
        statistic([1.0], "p42")


def test_outliers_by_iqr_fences() -> None:
    data = np.array([*ONE_TO_TEN, 100.0])  # q1 3.5, q3 8.5, IQR 5: 100 is beyond both fences
    assert count_outside(data, 1.5) == 1
    assert count_outside(data, 3.0) == 1
    assert count_outside(np.array([*ONE_TO_TEN, 20.0]), 3.0) == 0  # fence at 23.5
    assert count_outside(np.array([*ONE_TO_TEN, 20.0]), 1.5) == 1  # fence at 16


def test_bootstrap_ci_matches_scipy_percentile_bootstrap() -> None:
    data = np.random.default_rng(3).lognormal(0, 0.5, 40)
    ours = bootstrap_ci(data, "median", resamples=300, seed=7)
    ref = sps.bootstrap(
        (data,), np.median, n_resamples=300, method="percentile", rng=np.random.default_rng(7), vectorized=True
    ).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high))
    assert ours is not None and ours[0] <= np.median(data) <= ours[1]


def test_bootstrap_ci_degenerate_inputs() -> None:
    assert bootstrap_ci([5.0], "median") is None
    assert bootstrap_ci([5.0, 5.0, 5.0], "median", resamples=50) == (5.0, 5.0)
    assert bootstrap_ci([5.0, 5.0, 5.0], "variance", resamples=50) == (0.0, 0.0)


def test_describe_has_every_field_and_is_json_safe() -> None:
    d = describe(ONE_TO_TEN, resamples=100)
    for key in DESCRIBE_FIELDS:
        assert key in d
    assert d["n"] == 10 and d["min"] == 1.0 and d["max"] == 10.0 and d["iqr"] == pytest.approx(4.5)
    json.dumps(d, allow_nan=False)
    empty = describe([], resamples=10)
    assert empty["n"] == 0 and empty["median"] is None and empty["ci_median"] is None
    json.dumps(empty, allow_nan=False)


def test_json_safe() -> None:
    out = json_safe({"a": math.nan, "b": (1, np.float64(2.5)), "c": np.int64(3), "d": [math.inf], "e": np.bool_(1)})
    assert out == {"a": None, "b": [1, 2.5], "c": 3, "d": [None], "e": True}
    assert json_safe({"p": Path("/x"), "s": {2, 1}, "n": None}) == {"p": "/x", "s": [1, 2], "n": None}


def test_values_by_scenario_drops_failed_and_nan() -> None:
    samples = scenario_samples("socket", 5, 100.0, 300.0)
    samples[0].ok = False
    samples[1].connect_us = math.nan
    v = values_by_scenario(samples)
    assert v["socket"]["connect_us"].size == 3
    assert v["socket"]["lifecycle_ms"].size == 4


finite = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(st.lists(finite, min_size=2, max_size=60))
def test_describe_properties(values: list[float]) -> None:
    d = describe(values, resamples=50)
    assert d["p50"] == d["median"]
    eps = 1e-9 * d["max"]  # interpolation may land an ulp outside the data
    assert d["min"] - eps <= d["median"] <= d["p95"] + eps <= d["p99"] + 2 * eps <= d["max"] + 3 * eps
    assert d["ci_median"][0] <= d["ci_median"][1] + eps
    assert d["min"] - eps <= d["ci_median"][0] and d["ci_median"][1] <= d["max"] + eps
    assert d["variance"] >= 0 and d["stdev"] == pytest.approx(math.sqrt(d["variance"]))
    json.dumps(d, allow_nan=False)


@settings(max_examples=30, deadline=None)
@given(st.lists(finite, min_size=2, max_size=40), st.floats(min_value=0.01, max_value=100))
def test_statistics_scale_with_the_data(values: list[float], k: float) -> None:
    scaled = [k * v for v in values]
    # Rounding error grows with the data's magnitude (e.g. the variance of equal values of 1e7 is
    # ~1e-9, not 0): the absolute tolerance, never below the old 1e-9, follows the data's scale
    # (about 500 ulps of it).
    magnitude = max(1.0, max(abs(v) for v in scaled))
    for name in STAT_NAMES:
        factor = k * k if name == "variance" else k
        tol = max(1e-9, 1e-13 * (magnitude * magnitude if name == "variance" else magnitude))
        assert statistic(scaled, name) == pytest.approx(factor * statistic(values, name), rel=1e-9, abs=tol)
