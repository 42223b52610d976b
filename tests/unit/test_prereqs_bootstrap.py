from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from coldstart_bench import bootstrap, prereqs


def fake_which(present: set[str]):  # type: ignore[no-untyped-def]
    return lambda name: f"/usr/bin/{name}" if name in present else None


def no_glob(_pattern: str) -> list[str]:
    return []


def test_nothing_missing_means_nothing_to_do() -> None:
    which = fake_which({"mmdebstrap", "cc", "apt-get"})
    plan = prereqs.plan_install("bench", which=which, globber=no_glob, uid=1000)
    assert plan.complete and plan.commands == () and plan.message == ""


def test_root_with_apt_installs_every_missing_package_in_one_command() -> None:
    plan = prereqs.plan_install("test", which=fake_which({"apt-get"}), globber=no_glob, uid=0)
    assert {p.name for p in plan.missing} == {
        "mmdebstrap",
        "C compiler",
        "PostgreSQL server binaries",
        "Node.js",
        "PgBouncer",
        "QEMU",
        "static busybox",
        "system Python",
        "Chromium",
    }
    assert plan.commands[0][:2] == ("apt-get", "update")
    install = plan.commands[-1]
    assert install[:2] == ("apt-get", "install")
    assert {"mmdebstrap", "gcc", "libc6-dev", "postgresql", "nodejs", "pgbouncer", "chromium"} <= set(install)
    assert "qemu-system-x86" in install
    assert plan.message == ""


def test_not_root_gets_one_message_with_the_exact_command() -> None:
    plan = prereqs.plan_install("bench", which=fake_which({"apt-get", "cc"}), globber=no_glob, uid=1000)
    assert not plan.commands
    assert plan.message.count("\n") <= 3, plan.message
    assert "sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends mmdebstrap'" in plan.message
    assert "mmdebstrap (builds the base image offline" in plan.message


def test_without_apt_the_message_names_the_debian_packages() -> None:
    plan = prereqs.plan_install("test", which=fake_which(set()), globber=no_glob, uid=0)
    assert not plan.commands
    assert "Debian packages mmdebstrap gcc libc6-dev postgresql" in plan.message


def test_glob_satisfies_a_prerequisite_and_env_waives_the_offline_base(monkeypatch: pytest.MonkeyPatch) -> None:
    which = fake_which({"cc", "node", "pgbouncer", "chromium", "qemu-system-x86_64"})
    found = prereqs.missing("test", which=which, globber=lambda p: ["/usr/lib/postgresql/15/bin/initdb"])
    assert [p.name for p in found] == ["mmdebstrap"]
    monkeypatch.setenv("COLDSTART_BASE_IMAGE", "my/base:1")
    assert prereqs.missing("bench", which=which, globber=no_glob) == []


def test_a_new_prerequisite_is_one_table_entry() -> None:
    extra = prereqs.Prerequisite("redis", "example backend", ("redis-server",), frozenset({"redis"}), ("redis-server",))
    plan = prereqs.plan_install("redis", which=fake_which({"apt-get"}), globber=no_glob, uid=0, table=(extra,))
    assert plan.commands[-1][-1] == "redis-server"


def test_requirements_come_from_pyproject_with_extras(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname="x"\ndependencies=["a>=1"]\n[project.optional-dependencies]\ndev=["b"]\npg=["c<2"]\nother=["d"]\n'
    )
    assert bootstrap.requirements(pyproject) == ["a>=1", "b", "c<2"]
    assert "pytest-xdist>=3.6,<4" in bootstrap.requirements()


def test_unmet_checks_presence_and_version() -> None:
    installed = {"a": "1.5", "b": "3.0"}

    def version_of(name: str) -> str:
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    assert bootstrap.unmet(["a>=1,<2", "b<3", "c"], version_of) == ["b<3", "c"]


def test_unknown_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert bootstrap.main(["frobnicate"]) == 2
    assert "./run bench" in capsys.readouterr().err


def test_missing_host_program_stops_before_pytest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prereqs.shutil, "which", lambda name: None)
    monkeypatch.setattr(prereqs.os, "geteuid", lambda: 1000)
    monkeypatch.delenv("COLDSTART_BASE_IMAGE", raising=False)
    monkeypatch.setattr(bootstrap.os, "execv", lambda *a: pytest.fail("pytest must not start"))
    assert bootstrap.main(["bench"]) == 2
    err = capsys.readouterr().err
    assert err.count("coldstart-bench: missing mmdebstrap") == 1, err
    assert err.count("Debian packages mmdebstrap") == 1


def test_pytest_arguments_default_paths_and_user_paths() -> None:
    assert bootstrap.pytest_arguments("test", []) == ["tests/", "-n", "2"]
    assert bootstrap.pytest_arguments("bench", ["--bench-iterations", "20"]) == ["bench/", "--bench-iterations", "20"]
    narrowed = bootstrap.pytest_arguments("test", ["tests/unit/test_doctor.py::test_engine_locality", "-q"])
    assert narrowed == ["-n", "2", "tests/unit/test_doctor.py::test_engine_locality", "-q"]
