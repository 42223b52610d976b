"""Host programs the harness needs, as data: what provides each, which Debian packages install it,
and which command (``bench``, ``test``) or scenario family needs it.

Stdlib only: the bootstrap reads this before any Python dependency is installed. A new
prerequisite is one entry of ``PREREQUISITES``.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

Which = Callable[[str], str | None]
Glob = Callable[[str], list[str]]


@dataclass(frozen=True)
class Prerequisite:
    name: str
    why: str
    apt: tuple[str, ...]  # Debian packages that provide it
    needed_for: frozenset[str]  # "bench", "test", or scenario families ("node", "pgbouncer", ...)
    executables: tuple[str, ...] = ()  # present when any of these is on PATH
    paths: tuple[str, ...] = ()  # or when any of these globs matches a file
    unless_env: str = ""  # not needed when this environment variable is set

    def present(self, which: Which | None = None, globber: Glob | None = None) -> bool:
        if self.unless_env and os.environ.get(self.unless_env):
            return True
        which, globber = which or shutil.which, globber or glob.glob
        return any(which(e) for e in self.executables) or any(globber(p) for p in self.paths)


PREREQUISITES: tuple[Prerequisite, ...] = (
    Prerequisite(
        "mmdebstrap",
        "builds the base image offline from Debian packages when no registry base can be pulled",
        apt=("mmdebstrap",),
        needed_for=frozenset({"bench", "test"}),
        executables=("mmdebstrap",),
        unless_env="COLDSTART_BASE_IMAGE",  # a base image of the user's own
    ),
    Prerequisite(
        "C compiler",
        "compiles the pool manager load generator and the C client of the tests",
        apt=("gcc", "libc6-dev"),
        needed_for=frozenset({"test", "pool-load", "c"}),
        executables=("cc", "gcc"),
    ),
    Prerequisite(
        "PostgreSQL server binaries",
        "a throwaway local cluster for the PostgreSQL pool tests",
        apt=("postgresql",),
        needed_for=frozenset({"test"}),
        paths=("/usr/lib/postgresql/*/bin/initdb",),
    ),
    Prerequisite(
        "Node.js",
        "runs the Node.js function's unit tests on the host",
        apt=("nodejs",),
        needed_for=frozenset({"test", "node"}),
        executables=("node", "nodejs"),
    ),
    Prerequisite(
        "PgBouncer",
        "the PgBouncer comparison's unit tests on the host",
        apt=("pgbouncer",),
        needed_for=frozenset({"test", "pgbouncer"}),
        executables=("pgbouncer",),
        paths=("/usr/sbin/pgbouncer",),
    ),
    Prerequisite(
        "QEMU",
        "boots Debian's kernel (software emulation) for the kernel TLS test: this host's kernel may lack the tls ULP",
        apt=("qemu-system-x86",),
        needed_for=frozenset({"test", "ktls-vm"}),
        executables=("qemu-system-x86_64",),
    ),
    Prerequisite(
        "static busybox",
        "the shell and module loader of the kernel TLS test's RAM-only guest",
        apt=("busybox-static",),
        needed_for=frozenset({"test", "ktls-vm"}),
        paths=("/bin/busybox", "/usr/bin/busybox"),
    ),
    Prerequisite(
        "system Python",
        "the interpreter (with its compiled standard library) copied into the kernel TLS test's guest",
        apt=("python3",),
        needed_for=frozenset({"test", "ktls-vm"}),
        paths=("/usr/bin/python3",),
    ),
    Prerequisite(
        "Chromium",
        "opens report.html in a headless browser to check it renders (tests/unit/test_report_browser.py)",
        apt=("chromium",),
        needed_for=frozenset({"test"}),
        executables=("chromium", "chromium-browser", "google-chrome"),
    ),
    Prerequisite(
        "crun",
        "an OCI runtime to compare with runc (register it in /etc/docker/daemon.json, then restart dockerd)",
        apt=("crun",),
        needed_for=frozenset({"runtimes"}),
        executables=("crun",),
    ),
)


def needed(purpose: str, table: Iterable[Prerequisite] = PREREQUISITES) -> list[Prerequisite]:
    return [p for p in table if purpose in p.needed_for]


def missing(
    purpose: str,
    which: Which | None = None,
    globber: Glob | None = None,
    table: Iterable[Prerequisite] = PREREQUISITES,
) -> list[Prerequisite]:
    """The prerequisites of purpose that are not on this machine."""
    return [p for p in needed(purpose, table) if not p.present(which, globber)]


def apt_packages(prereqs: Sequence[Prerequisite]) -> list[str]:
    return list(dict.fromkeys(pkg for p in prereqs for pkg in p.apt))


def apt_command(prereqs: Sequence[Prerequisite]) -> str:
    """The one command that installs them (as root)."""
    packages = " ".join(shlex.quote(p) for p in apt_packages(prereqs))
    return f"apt-get update && apt-get install -y --no-install-recommends {packages}"


@dataclass(frozen=True)
class InstallPlan:
    """What to do about missing prerequisites: run ``argv_list`` here, or tell the user ``message``."""

    missing: tuple[Prerequisite, ...]
    commands: tuple[tuple[str, ...], ...] = ()
    message: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing


def plan_install(
    purpose: str,
    which: Which | None = None,
    globber: Glob | None = None,
    uid: int | None = None,
    table: Iterable[Prerequisite] = PREREQUISITES,
) -> InstallPlan:
    """Install missing prerequisites with apt when root and apt-get exist; otherwise one message
    naming all of them and the exact command."""
    which = which or shutil.which
    absent = tuple(missing(purpose, which, globber, table))
    if not absent:
        return InstallPlan(())
    uid = os.geteuid() if uid is None else uid
    packages = apt_packages(absent)
    if uid == 0 and which("apt-get"):
        return InstallPlan(
            absent,
            commands=(
                ("apt-get", "update", "-qq"),
                ("apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages),
            ),
        )
    names = ", ".join(f"{p.name} ({p.why})" for p in absent)
    if which("apt-get"):
        how = f"Run as root:\n    sudo sh -c '{apt_command(absent)}'"
    else:
        how = f"Install the equivalent of the Debian packages {' '.join(packages)} with your system's package manager."
    return InstallPlan(absent, message=f"missing {names}.\n{how}\nthen run the command again.")
