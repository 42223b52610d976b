"""Other-language clients: the minimal C client and the C load generator, built with the system cc."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import Echo, Manager, short_tmpdir

C_DIR = Path(__file__).resolve().parents[2] / "components" / "c"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc/gcc/clang) on PATH")


def build(name: str, out_dir: Path) -> Path:
    assert CC is not None
    exe = out_dir / name
    subprocess.run(
        [CC, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(C_DIR / f"{name}.c")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return exe


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[Path, Echo, Manager]]:
    with short_tmpdir() as d:
        echo = Echo()
        m = Manager(d / "m.sock", echo.target, 8)
        try:
            yield d, echo, m
        finally:
            m.stop()
            echo.stop()


def test_c_client_acquires_and_echoes(setup: tuple[Path, Echo, Manager]) -> None:
    d, echo, m = setup
    exe = build("pool_client", d)
    out = subprocess.run([str(exe), m.sock_path, "echo", "hello from a C client"], capture_output=True, timeout=30)
    assert out.returncode == 0, out
    res = json.loads(out.stdout)
    assert res["ok"] is True and res["echo_ok"] is True
    assert res["reply"]["ok"] is True and res["reply"]["peer"] == echo.target


def test_c_client_reports_protocol_errors(setup: tuple[Path, Echo, Manager]) -> None:
    d, _echo, m = setup
    exe = build("pool_client", d)
    out = subprocess.run([str(exe), m.sock_path, "no-such-pool"], capture_output=True, timeout=30)
    assert out.returncode == 1
    res = json.loads(out.stdout)
    assert res["ok"] is False and res["reply"]["error"] == "unknown_pool"


def test_c_loadgen_short_run(setup: tuple[Path, Echo, Manager]) -> None:
    d, _echo, m = setup
    exe = build("loadgen", d)
    before = m.stats()["pools"]["echo"]["handed_out"]
    out = subprocess.run(
        [str(exe), "--socket", m.sock_path, "--procs", "2", "--duration", "1"], capture_output=True, timeout=30
    )
    assert out.returncode == 0, out
    res = json.loads(out.stdout)
    assert res["failures"] == 0 and res["count"] > 100
    assert 0 < res["latency_us"]["p50"] <= res["latency_us"]["p99"] <= res["latency_us"]["max"]
    assert m.stats()["pools"]["echo"]["handed_out"] - before == res["count"]
