"""The README's two commands: ``./run bench`` and ``./run test`` (``python3 -m coldstart_bench.bootstrap``).

Each sets up what it needs, then runs pytest:

1. Python packages. The interpreter used is, in order: an active virtualenv; ``.venv/`` of the
   checkout; the calling interpreter when it already has every requirement of ``pyproject.toml``
   (``[dev,pg]`` included). Otherwise ``.venv/`` is created and the project installed into it
   (``pip install -e '.[dev,pg]'``): a venv is never blocked by PEP 668 and leaves the system's
   packages alone.
2. Host programs (``coldstart_bench.prereqs``): installed with apt when running as root, else
   one message with the exact command, and nothing runs.
3. ``pytest bench/`` or ``pytest tests/ -n 2``, with any further arguments passed on.

Stdlib only: it runs before any dependency is installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import prereqs

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = REPO_ROOT / ".venv"
EXTRAS = ("dev", "pg")
# command -> (pytest arguments, default paths: replaced when the user names paths of their own)
COMMANDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bench": ((), ("bench/",)),
    "test": (("-n", "2"), ("tests/",)),
}
MIN_PYTHON = (3, 11)


class BootstrapError(RuntimeError):
    """Set-up cannot continue; the message says what to do."""


def requirements(pyproject: Path = REPO_ROOT / "pyproject.toml", extras: Sequence[str] = EXTRAS) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs.extend(project.get("optional-dependencies", {}).get(extra, []))
    return reqs


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise BootstrapError(f"cannot read the requirement {requirement!r} in pyproject.toml")
    return match.group(1)


def unmet(reqs: Sequence[str], version_of: Any = None) -> list[str]:
    """Requirements the running interpreter does not satisfy (by name, and version where
    ``packaging`` is importable to check it)."""
    version_of = version_of or importlib.metadata.version
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a bare interpreter: presence is all we can check
        Requirement = None  # type: ignore[assignment,misc]
    out = []
    for req in reqs:
        try:
            installed = version_of(_requirement_name(req))
        except importlib.metadata.PackageNotFoundError:
            out.append(req)
            continue
        if Requirement is not None and not Requirement(req).specifier.contains(installed, prereleases=True):
            out.append(req)
    return out


def venv_python(venv: Path = VENV_DIR) -> Path:
    return venv / "bin" / "python"


def choose_interpreter(log: Any = print) -> str:
    """The interpreter to run pytest with, creating and filling ``.venv`` when needed."""
    if os.environ.get("VIRTUAL_ENV") or sys.prefix != sys.base_prefix:
        missing_here = unmet(requirements())
        if missing_here:
            _pip_install(sys.executable, log)
        return sys.executable
    if venv_python().exists():
        _ensure_venv_requirements(log)
        return str(venv_python())
    if not unmet(requirements()):
        return sys.executable
    log(f"coldstart-bench: creating {VENV_DIR} for the Python packages (pyproject.toml [{','.join(EXTRAS)}])")
    proc = _make_venv()
    if proc.returncode != 0 and os.geteuid() == 0 and shutil.which("apt-get"):
        # Debian's python3 ships venv (ensurepip) separately.
        shutil.rmtree(VENV_DIR, ignore_errors=True)
        log("coldstart-bench: installing python3-venv with apt")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "python3-venv"], env=env)
        proc = _make_venv()
    if proc.returncode != 0:
        shutil.rmtree(VENV_DIR, ignore_errors=True)
        raise BootstrapError(
            f"could not create {VENV_DIR}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}\n"
            "On Debian/Ubuntu: apt-get install python3-venv, then run the command again."
        )
    _pip_install(str(venv_python()), log)
    return str(venv_python())


def _make_venv() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "venv", str(VENV_DIR)], capture_output=True, text=True)


def _ensure_venv_requirements(log: Any) -> None:
    check = "import sys; from coldstart_bench.bootstrap import requirements as r, unmet; sys.exit(bool(unmet(r())))"
    proc = subprocess.run([str(venv_python()), "-c", check], cwd=REPO_ROOT, capture_output=True)
    if proc.returncode != 0:
        _pip_install(str(venv_python()), log)


def _pip_install(python: str, log: Any) -> None:
    target = f".[{','.join(EXTRAS)}]"
    log(f"coldstart-bench: installing the Python packages: {python} -m pip install -e '{target}'")
    proc = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", target], cwd=REPO_ROOT
    )
    if proc.returncode != 0:
        raise BootstrapError(f"pip install -e '{target}' failed (exit {proc.returncode}); see its output above")


def ensure_host_programs(purpose: str, log: Any = print) -> None:
    plan = prereqs.plan_install(purpose)
    if plan.complete:
        return
    if plan.message:
        raise BootstrapError(plan.message)
    log(f"coldstart-bench: installing {', '.join(p.name for p in plan.missing)} with apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in plan.commands:
        proc = subprocess.run(list(argv), env=env)
        if proc.returncode != 0:
            raise BootstrapError(f"`{' '.join(argv)}` failed (exit {proc.returncode})")
    still = prereqs.missing(purpose)
    if still:
        raise BootstrapError(f"still missing after apt-get install: {', '.join(p.name for p in still)}")


def pytest_arguments(command: str, rest: Sequence[str]) -> list[str]:
    """The command's pytest arguments plus the user's; a path of the user's (an existing file or
    directory, or a node id) replaces the default paths."""
    options, defaults = COMMANDS[command]
    names_path = any(not a.startswith("-") and (REPO_ROOT / a.split("::")[0]).exists() for a in rest)
    return [*(() if names_path else defaults), *options, *rest]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(
            "usage: ./run bench [pytest args...]   run the benchmark with defaults, write reports/latest/\n"
            "       ./run test  [pytest args...]   run the tests (unit + integration)",
            file=sys.stderr,
        )
        return 2
    command, rest = args[0], args[1:]
    if sys.version_info < MIN_PYTHON:
        print(f"coldstart-bench needs Python >= {'.'.join(map(str, MIN_PYTHON))}; this is {sys.version.split()[0]}")
        return 2
    try:
        ensure_host_programs(command)
        python = choose_interpreter()
    except BootstrapError as exc:
        print(f"coldstart-bench: {exc}", file=sys.stderr)
        return 2
    full = [python, "-m", "pytest", *pytest_arguments(command, rest)]
    print(f"coldstart-bench: {' '.join(full)}", flush=True)
    os.chdir(REPO_ROOT)
    os.execv(python, full)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
