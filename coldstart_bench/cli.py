"""The ``coldstart-bench`` console script (also ``python3 -m coldstart_bench``).

Subcommands register in ``SUBCOMMANDS``: a name, a help line, a function adding its arguments
and a function running it (returning the exit status). Adding one is one entry.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the facts and family status as JSON")


def _doctor(args: argparse.Namespace) -> int:
    from .doctor import gather, render, to_json

    facts = gather()
    print(to_json(facts) if args.json else "\n".join(render(facts)))
    return 0  # a report, not a gate: families that cannot run say so above


SUBCOMMANDS: list[Subcommand] = [
    Subcommand(
        "doctor", "what this machine and engine offer; which scenario families can run", _doctor_arguments, _doctor
    ),
]


def build_parser(subcommands: Sequence[Subcommand] = SUBCOMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coldstart-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in subcommands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args))


if __name__ == "__main__":
    sys.exit(main())
