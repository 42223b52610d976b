"""Scenario files in a run, without Docker: catalogue entries, usage errors through pytest, the
function containers and pools the testbed makes for them (against a fake engine)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from coldstart_bench.catalogue import default_catalogue
from coldstart_bench.measure.executor import validate
from coldstart_bench.measure.runner import ColdStartResult, to_sample
from coldstart_bench.measure.userbed import UserBed, exit_status_parser, image_dirs, needs_entrypoint
from coldstart_bench.userscenarios import (
    ScenarioFileError,
    load_scenario_file,
    register_user_scenarios,
    user_scenario_ids,
)

REPO = Path(__file__).resolve().parents[2]
REDIS = REPO / "examples" / "redis" / "scenarios.toml"


def redis_text() -> str:
    """The example file with its build directories absolute, to be written elsewhere."""
    ex = REDIS.parent
    return (
        REDIS.read_text()
        .replace('build = "server"', f'build = "{ex}/server"')
        .replace('build = "function"', f'build = "{ex}/function"')
    )


MIXED = """
format = 1

[backends.kv]
image = "kv:1"
port = 7777
ready_tcp = true

[backends.theirs]
address = "db.example.org:6000"

[scenarios.kv-direct]
image = "fn:1"
command = ["fn", "--target", "{target}"]
connection = "direct"
backend = "kv"

[scenarios.kv-fd3]
image = "fn:1"
command = ["fn", "--pool", "{pool}"]
connection = "fd3"
backend = "kv"
network = "none"
runtime = "runsc"
success = "exit-status"
timing_line = 'connect_us=(?P<connect_us>[0-9.]+) rtt=(?P<request_rtt_us>[0-9.]+)'

[scenarios.theirs-socket]
image = "fn:1"
command = ["fn", "--socket", "{socket}", "--pool", "{pool}"]
connection = "injected"
backend = "theirs"
"""


def test_redis_scenarios_join_the_catalogue_compared_with_direct() -> None:
    catalogue = default_catalogue()
    added = register_user_scenarios(catalogue, load_scenario_file(REDIS))
    assert [s.id for s in added] == ["redis-direct", "redis-socket", "redis-socket-nonet"]
    assert all(catalogue.knows(s.id) and s.family == "user" for s in added)
    direct, socket, nonet = added
    assert (direct.mode, socket.mode, nonet.mode, nonet.network) == ("direct", "socket", "socket", "none")
    assert direct.references == ()
    for injected in (socket, nonet):
        [ref] = injected.references
        assert ref.scenario == "redis-direct" and ref.headline
        assert {f.kind for f in ref.findings} == {"connect_speedup", "lifecycle_saving"}
    json.dumps(socket.declared())  # summary.json carries it


def test_an_id_clashing_with_a_builtin_is_an_error_naming_file_and_id(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(redis_text().replace("[scenarios.redis-direct]", "[scenarios.direct]"))
    with pytest.raises(ScenarioFileError, match=r"s\.toml: scenarios\.direct: id 'direct' is already"):
        register_user_scenarios(default_catalogue(), load_scenario_file(path))


def test_runtime_and_fd3_reach_the_catalogue_entry(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(MIXED)
    users = load_scenario_file(path)
    ids = user_scenario_ids(users)
    assert sorted(ids) == ["kv-direct", "kv-fd3@runsc", "theirs-socket"]
    added = {s.name: s for s in register_user_scenarios(default_catalogue(), users)}
    assert added["kv-fd3"].path == "fd3" and added["kv-fd3"].entrypoint == "fd3"
    assert added["theirs-socket"].references == ()  # no direct scenario on that backend
    assert needs_entrypoint(ids) and image_dirs(ids) == {}


def _pytest(pytester: pytest.Pytester, plugin: tuple[str, ...], *args: str) -> pytest.RunResult:
    pytester.makepyfile(
        test_x="def test_cold_start(catalogue_scenario_id):\n    pass\n",
    )
    return pytester.runpytest_subprocess(*plugin, "-p", "no:cacheprovider", *args)


def test_bad_scenario_file_is_a_usage_error_naming_file_and_key(
    pytester: pytest.Pytester, plugin: tuple[str, ...]
) -> None:
    bad = pytester.path / "bad.toml"
    bad.write_text(redis_text().replace('connection = "direct"', 'connection = "pooled"', 1))
    result = _pytest(pytester, plugin, "--bench-scenarios", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bench-scenarios: *bad.toml: scenarios.redis-direct.connection: must be one of*"])
    assert "Traceback" not in result.stderr.str()


def test_builtin_id_clash_is_a_usage_error(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    clash = pytester.path / "clash.toml"
    clash.write_text(redis_text().replace("[scenarios.redis-socket]", "[scenarios.socket]"))
    result = _pytest(pytester, plugin, "--bench-scenarios", str(clash))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*clash.toml: scenarios.socket: id 'socket' is already a scenario*"])


def test_user_scenarios_become_tests_selectable_with_k(pytester: pytest.Pytester, plugin: tuple[str, ...]) -> None:
    result = _pytest(pytester, plugin, "--bench-scenarios", str(REDIS), "-k", "redis-socket", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    collected = [line for line in result.stdout.lines if "::" in line]
    assert collected == [
        "test_x.py::test_cold_start[redis-socket]",
        "test_x.py::test_cold_start[redis-socket-nonet]",
    ]


# --- the testbed side, against a fake engine ---------------------------------------------------------
class FakeContainer:
    def __init__(self, name: str, logs: bytes = b"") -> None:
        self.name, self._logs, self.status, self.removed = name, logs, "running", False

    def reload(self) -> None:
        pass

    def logs(self) -> bytes:
        return self._logs

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeContainers:
    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.logs = b"booting\nReady to accept connections\n"

    def run(self, image: str, command: Any = None, **kw: Any) -> Any:
        self.runs.append({"image": image, "command": command, **kw})
        return None if kw.get("remove") else FakeContainer(kw["name"], self.logs)


class FakeClient:
    def __init__(self) -> None:
        self.containers = FakeContainers()
        self.runtimes: dict[str, Any] = {"runc": {}}

    def info(self) -> dict[str, Any]:
        return {"Runtimes": self.runtimes}


class FakeImages:
    pool = "coldstart-bench/pool:1"
    extra: ClassVar[dict[str, str]] = {}


class FakeTestbed:
    run_id = "r1"
    network_name = "csb-net-r1"
    socket_volume = "csb-sock-r1"
    labels: ClassVar[dict[str, str]] = {"coldstart-bench": "1"}

    def __init__(self) -> None:
        self.client = FakeClient()
        self.images = FakeImages()
        self.pools: list[tuple[str, str, int]] = []

    def add_pool(self, name: str, target: str, size: int) -> None:
        self.pools.append((name, target, size))


def _bed(tmp_path: Path, text: str) -> tuple[UserBed, FakeTestbed, dict[str, Any]]:
    path = tmp_path / "s.toml"
    path.write_text(text)
    users = user_scenario_ids(load_scenario_file(path))
    testbed = FakeTestbed()
    built = {name: f"coldstart-bench/{name}:abc" for name in image_dirs(users)}
    return UserBed(testbed, users, built), testbed, users  # type: ignore[arg-type]


def test_backend_started_on_the_run_network_and_pool_added_for_injection(tmp_path: Path) -> None:
    text = redis_text()
    bed, testbed, _users = _bed(tmp_path, text)
    bed.prepare("redis-direct")
    [started] = testbed.client.containers.runs
    assert started["image"] == "coldstart-bench/redis-server:abc" and started["network"] == "csb-net-r1"
    assert testbed.pools == []  # a direct scenario needs no pool
    bed.prepare("redis-socket")
    assert len(testbed.client.containers.runs) == 1  # started once
    assert testbed.pools == [("redis", "csb-user-redis-r1:6379", 16)]

    direct = bed.function_spec("redis-direct")
    assert direct.image == "coldstart-bench/redis-function:abc" and direct.network == "csb-net-r1"
    assert direct.command[-2:] == ["--target", "csb-user-redis-r1:6379"] and direct.binds == {}
    nonet = bed.function_spec("redis-socket-nonet")
    assert nonet.network == "none" and nonet.binds == {"csb-sock-r1": {"bind": "/run/cpm", "mode": "rw"}}
    assert nonet.command[-4:] == ["--socket", "/run/cpm/pool.sock", "--pool", "redis"]
    assert nonet.record_parser is None and nonet.runtime == ""


def test_a_backend_that_never_logs_ready_fails_with_its_logs(tmp_path: Path) -> None:
    text = redis_text().replace('ready_log = "Ready to accept connections"', 'ready_log = "x"\nready_timeout_s = 0.3')
    bed, testbed, _ = _bed(tmp_path, text)
    testbed.client.containers.logs = b"starting up\nstill starting\n"
    with pytest.raises(RuntimeError, match=r"no log line matched ready_log 'x' within 0.3 s(.|\n)*still starting"):
        bed.prepare("redis-direct")


def test_external_fd3_and_runtime(tmp_path: Path) -> None:
    bed, testbed, _ = _bed(tmp_path, MIXED)
    bed.entrypoint_volume = "csb-bin-r1"  # copied from the cfunction image on the real engine
    bed.prepare("theirs-socket")
    assert testbed.client.containers.runs == [] and testbed.pools == [("theirs", "db.example.org:6000", 16)]
    with pytest.raises(RuntimeError, match="runtime 'runsc' is not registered with the Docker engine"):
        bed.prepare("kv-fd3@runsc")
    testbed.client.runtimes["runsc"] = {"path": "/usr/bin/runsc"}
    bed.prepare("kv-fd3@runsc")
    spec = bed.function_spec("kv-fd3@runsc")
    probe = testbed.client.containers.runs[-1]  # ready_tcp: probed from inside the run network
    assert probe["network"] == "csb-net-r1" and probe["command"][-3:] == ["csb-user-kv-r1", "7777", "30.0"]
    assert spec.runtime == "runsc" and spec.network == "none" and spec.image == "fn:1"
    assert spec.command[:6] == ["/run/cpm-bin/fd3-entrypoint", "--socket", "/run/cpm/pool.sock", "--pool", "kv", "--"]
    assert spec.command[6:] == ["fn", "--pool", "kv"]
    assert spec.binds["csb-bin-r1"] == {"bind": "/run/cpm-bin", "mode": "ro"}
    assert spec.record_parser is not None


def test_exit_status_records_are_verified_like_json_ones() -> None:
    parse = exit_status_parser(r"connect_us=(?P<connect_us>[0-9.]+) rtt=(?P<request_rtt_us>[0-9.]+)", "socket", "fd3")
    record = parse("hello\nconnect_us=12.5 rtt=40\n", 0)
    assert record == {"ok": True, "mode": "socket", "path": "fd3", "connect_us": 12.5, "request_rtt_us": 40.0}
    assert parse("connect_us=3 rtt=4", 1)["ok"] is False
    with pytest.raises(ValueError, match="no stdout line matches"):
        parse("nothing here", 0)
    catalogue = default_catalogue()
    path = REPO / "examples" / "redis" / "scenarios.toml"
    scenario = register_user_scenarios(catalogue, load_scenario_file(path))[2]  # redis-socket-nonet
    result = ColdStartResult("c1", 0, "", "", {"create": 0, "destroy": 10**6}, {**record, "path": "socket"})
    sample = to_sample(result, scenario=scenario.id, iteration=0, delay_ms=0, network="none")
    assert sample.ok and validate(scenario, [sample]) == []
    wrong = to_sample(
        ColdStartResult("c2", 0, "", "", {}, {**record, "interfaces": ["lo", "eth0"], "path": "socket"}),
        scenario=scenario.id,
        iteration=1,
        delay_ms=0,
        network="none",
    )
    assert any("eth0" in p for p in validate(scenario, [wrong]))
