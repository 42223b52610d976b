"""What compared arms differ in besides the connection method (catalogue.differs_in, analyse/arms.py)."""

from __future__ import annotations

import dataclasses

from coldstart_bench.analyse.arms import FACTOR, METHOD, STACK, arm_factors, comparison_kind, factor_subject
from coldstart_bench.catalogue import Scenario, default_catalogue, differs_in


def test_arms_that_differ_only_in_the_connection_method_differ_in_nothing() -> None:
    cat = default_catalogue()
    for a, b in (("socket", "direct"), ("direct-aa", "direct"), ("fallback", "direct"), ("socket-relay", "socket")):
        assert arm_factors(cat, a, b) == (), (a, b)
        assert comparison_kind(cat, a, b, ()) == METHOD


def test_the_network_namespace_image_and_runtime_are_factors_of_their_own() -> None:
    cat = default_catalogue(runtimes=("runc", "runsc"))
    assert arm_factors(cat, "socket-nonet", "socket") == ("network_mode",)
    assert comparison_kind(cat, "socket-nonet", "socket", ("network_mode",)) == FACTOR
    assert arm_factors(cat, "socket-nonet", "direct") == ("network_mode",)
    assert comparison_kind(cat, "socket-nonet", "direct", ("network_mode",)) == STACK
    # The fd-3 arm runs the same image as the in-process ones: only the connection method differs.
    assert arm_factors(cat, "socket-fd3", "direct") == arm_factors(cat, "socket-fd3", "socket") == ()
    assert arm_factors(cat, "socket@runsc", "socket") == ("runtime",)
    assert arm_factors(cat, "node-socket", "direct") == ("image", "language")
    assert arm_factors(cat, "socket", "no-such-scenario") == ()


def test_a_new_axis_counts_as_a_factor_and_bookkeeping_does_not() -> None:
    base = Scenario("a", "direct")
    assert differs_in(base, dataclasses.replace(base, name="b", description="x", family="y")) == ()
    assert differs_in(base, dataclasses.replace(base, mode="socket", handoff="relay", entrypoint="fd3")) == ()
    assert differs_in(base, dataclasses.replace(base, delay_ms=10, burst=4, transport="tls")) == (
        "delay",
        "burst",
        "transport",
    )


def test_a_finding_about_another_factor_is_named_by_it() -> None:
    cat = default_catalogue()
    text = factor_subject(cat, "socket", "socket-nonet", ("network_mode",), "Injection")
    assert text.startswith("Dropping the container's network namespace (which injection allows")
    stack = factor_subject(cat, "direct", "socket-nonet", ("network_mode",), "Injection without networking")
    assert stack.startswith("Stack comparison (Injection without networking, together with dropping")
    assert factor_subject(cat, "direct", "socket", (), "Injection") == "Injection"
