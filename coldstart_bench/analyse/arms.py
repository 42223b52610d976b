"""What two compared arms differ in besides the connection method, and how a finding about them is named.

A comparison isolates the connection method only when its arms differ in nothing else (`differs_in`
empty). Otherwise it measures another factor — dropping the network namespace, another image, another
language or runtime — alone (the connection method is the same in both arms: a *factor* comparison) or
together with the method (a *stack* comparison). Neither is an injection effect, and neither is worded as one.
"""

from __future__ import annotations

import dataclasses

from ..catalogue import FACTOR_NAMES, Catalogue, Scenario, differs_in, method_differs
from ..measure.function_specs import SpecError, image_key

METHOD = "connection method"
FACTOR = "factor"
STACK = "stack"
_FIELD_OF = {factor: field for field, factor in FACTOR_NAMES.items()}


def _image(scenario: Scenario) -> str:
    try:
        return image_key(scenario)
    except SpecError:
        return ""


def arm_factors(catalogue: Catalogue, a: str, b: str) -> tuple[str, ...]:
    """`catalogue.differs_in` of the two scenarios, with `image` first when their functions run in
    different images; empty when either scenario is unknown."""
    sa, sb = catalogue.get(a), catalogue.get(b)
    if sa is None or sb is None:
        return ()
    factors = differs_in(sa, sb)
    if _image(sa) != _image(sb):
        factors = ("image", *factors)
    return factors


def comparison_kind(catalogue: Catalogue, a: str, b: str, factors: tuple[str, ...]) -> str:
    """METHOD (only the connection method differs), FACTOR (only other factors) or STACK (both)."""
    if not factors:
        return METHOD
    sa, sb = catalogue.get(a), catalogue.get(b)
    return STACK if sa is not None and sb is not None and method_differs(sa, sb) else FACTOR


def _value(scenario: Scenario, factor: str) -> str:
    if factor == "image":
        return _image(scenario) or "?"
    name = _FIELD_OF.get(factor, factor)
    names = {f.name for f in dataclasses.fields(Scenario)}
    return str(getattr(scenario, name)) if name in names else "?"


def factor_phrase(factor: str, slow: Scenario, fast: Scenario) -> str:
    """How a sentence names one factor going from `slow` (the reference) to `fast`."""
    before, after = _value(slow, factor), _value(fast, factor)
    if factor == "network_mode" and after == "none":
        return f"dropping the container's network namespace (which injection allows; network {before} → {after})"
    if factor == "network_mode" and before == "none":
        return f"adding a network namespace (network {before} → {after})"
    return f"another {factor} ({before} → {after})"


def factor_subject(catalogue: Catalogue, slow: str, fast: str, factors: tuple[str, ...], subject: str) -> str:
    """The subject of a finding's sentence: the catalogue's `subject` when the arms differ only in the
    connection method, else named by what differs (never as an injection effect)."""
    if not factors:
        return subject
    s_slow, s_fast = catalogue.get(slow), catalogue.get(fast)
    if s_slow is None or s_fast is None:
        return f"Arms differing in {', '.join(factors)}"
    phrases = [factor_phrase(f, s_slow, s_fast) for f in factors]
    what = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    if comparison_kind(catalogue, slow, fast, factors) == STACK:
        return (
            f"Stack comparison ({subject or 'the connection method'}, together with {what}; not an injection "
            "effect alone)"
        )
    return what[0].upper() + what[1:]


def label(kind: str, factors: tuple[str, ...]) -> str:
    """A prefix for sentences that have no subject of their own (connection time, variance)."""
    if kind == STACK:
        return f"Stack comparison (the arms also differ in {', '.join(factors)}): "
    if kind == FACTOR:
        return f"Not the connection method (the arms differ in {', '.join(factors)}): "
    return ""
