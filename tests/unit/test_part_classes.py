"""The part classes' commands and mounts, and what a cold start refuses, without an engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.containers import ColdStart, EchoServer, PoolManager
from coldstart_bench.containers.labels import LABEL_RUN, run_labels

NO_CLIENT: Any = None  # spec() never talks to the engine


def test_one_plain_pool_goes_on_the_command_line_in_a_temporary_socket_dir() -> None:
    pm = PoolManager("pool:img", network="net", pools={"echo": {"target": "echo:7000", "size": 3}})
    try:
        assert pm.command[-8:] == ["--target", "echo:7000", "--size", "3", "--socket", "/run/cpm/pool.sock",
                                   "--pool", "echo"]  # fmt: skip
        assert pm.socket_dir is not None and pm.socket_dir.is_dir()
        assert pm.function_binds() == {str(pm.socket_dir): {"bind": "/run/cpm", "mode": "rw"}}
        assert pm.pool == "echo" and pm.target_of() == "echo:7000"
    finally:
        pm.stop()
    assert not pm.socket_dir.exists()


def test_several_pools_go_into_a_config_file_and_a_volume_is_taken_as_given() -> None:
    pools = {"echo": {"target": "echo:7000", "size": 2}, "tls": {"kind": "tls", "target": "t:7443", "size": 1}}
    pm = PoolManager("pool:img", network="net", pools=pools, socket_volume="csb-sock-x")
    try:
        assert pm.socket_dir is None and pm.socket_source == "csb-sock-x"
        config_dir = next(source for source, bind, _ in pm.volumes if bind == "/run/cpm-config")
        written = json.loads((Path(config_dir) / "pool.json").read_text())
        assert written == {"socket": "/run/cpm/pool.sock", "pools": pools}
        assert pm.command[-2:] == ["--config", "/run/cpm-config/pool.json"]
    finally:
        pm.stop()
    with pytest.raises(ValueError, match="not both"):
        PoolManager("pool:img", network="net", pools=pools, socket_volume="v", socket_dir="/tmp")


def test_parts_carry_the_run_labels_they_are_given() -> None:
    labels = run_labels("run123")
    echo = EchoServer("echo:img", network="net", port=7100, labels=labels)
    assert echo.labels[LABEL_RUN] == "run123"
    assert echo.target == f"{echo.name}:7100"
    assert echo.command[-4:] == ["--host", "0.0.0.0", "--port", "7100"]


def test_a_cold_start_spec_is_the_catalogues_function_command() -> None:
    run = ColdStart(NO_CLIENT, network="net", labels=run_labels("run123"))
    pm = PoolManager("pool:img", network="net", pools={"echo": {"target": "echo:7000"}})
    try:
        spec = run.spec("function:img", mode="socket", pool=pm, network="none")
        assert spec.network == "none" and spec.binds == pm.function_binds()
        program = spec.command.index("components.function")
        assert spec.command[program - 2 : program + 3] == ["python3", "-m", "components.function", "--mode", "socket"]
        assert spec.labels[LABEL_RUN] == "run123"
        direct = run.spec("function:img", mode="direct", target="echo:7000")
        assert direct.network == "net" and direct.binds == {}
        assert direct.command[direct.command.index("--target") + 1] == "echo:7000"
    finally:
        pm.stop()


def test_a_cold_start_refuses_what_cannot_work() -> None:
    run = ColdStart(NO_CLIENT, network="net", labels=run_labels("run123"))
    with pytest.raises(ValueError, match="target="):
        run.spec("image", mode="direct")
    with pytest.raises(ValueError, match="network='none'"):
        run.spec("image", mode="direct", target="echo:7000", network="none")
    with pytest.raises(ValueError, match="pool="):
        run.spec("image", mode="socket")
    with pytest.raises(ValueError, match="mode must be"):
        run.spec("image", mode="telepathy", target="echo:7000")
