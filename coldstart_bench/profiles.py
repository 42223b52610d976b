"""Run profiles: a named study design as data — which scenarios, how many cold starts, how ordered.

A profile only fills in what the command line leaves open: `--bench-profile thesis --bench-iterations 200`
runs the thesis's scenarios 200 times each; `-k` narrows the profile's selection further.
"""

from __future__ import annotations

from dataclasses import dataclass

from .catalogue import Catalogue


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    families: tuple[str, ...] = ()  # scenario selection: every scenario of these catalogue families
    iterations: int | None = None
    interleave: bool | None = None
    block_size: int | None = None

    def scenario_ids(self, catalogue: Catalogue) -> list[str]:
        return [s.id for family in self.families for s in catalogue.family(family)]


PROFILES: dict[str, Profile] = {
    "thesis": Profile(
        "thesis",
        "the thesis's five scenarios at its own scale: 1000 cold starts each, interleaved in blocks of 10",
        families=("thesis",),
        iterations=1000,
        interleave=True,
        block_size=10,
    ),
}


def profile_named(name: str | None) -> Profile | None:
    """The profile of `--bench-profile NAME`; ValueError naming the known ones for anything else."""
    if name is None:
        return None
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}") from None
