from __future__ import annotations

from pathlib import Path

import pytest

from coldstart_bench.userscenarios import ScenarioFileError, load_scenario_file

REPO = Path(__file__).resolve().parents[2]

GOOD = """
format = 1

[backends.kv]
build = "server"
port = 6379
ready_log = "Ready"

[backends.theirs]
address = "db.example.org:5432"

[scenarios.kv-direct]
build = "function"
command = ["fn", "--target", "{target}"]
connection = "direct"
backend = "kv"

[scenarios.kv-fd3]
image = "myorg/fn:1"
command = ["fn"]
connection = "fd3"
backend = "theirs"
network = "none"
runtime = "runsc"
success = "exit-status"
timing_line = 'connect_us=(?P<connect_us>[0-9.]+)'
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("server", "function"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path


def write(project: Path, text: str) -> Path:
    path = project / "scenarios.toml"
    path.write_text(text)
    return path


def test_the_redis_example_loads() -> None:
    scenarios = {s.id: s for s in load_scenario_file(REPO / "examples/redis/scenarios.toml")}
    assert set(scenarios) == {"redis-direct", "redis-socket", "redis-socket-nonet"}
    direct, nonet = scenarios["redis-direct"], scenarios["redis-socket-nonet"]
    assert (direct.connection, direct.network, nonet.connection, nonet.network) == (
        "direct",
        "bridge",
        "injected",
        "none",
    )
    assert direct.function.image_name == "redis-function"
    assert direct.backend.source is not None and direct.backend.source.image_name == "redis-server"
    assert direct.backend.port == 6379 and direct.backend.ready_log
    assert direct.render_command("r:6379", "/s", "redis")[-1] == "r:6379"


def test_a_full_file_gives_typed_scenarios(project: Path) -> None:
    direct, fd3 = load_scenario_file(write(project, GOOD))
    assert direct.function.build == (project / "function").resolve() and direct.success == "json-record"
    assert direct.backend.ready_timeout_s == 30.0 and not direct.backend.external
    assert fd3.function.image == "myorg/fn:1" and fd3.backend.external
    assert fd3.backend.address == "db.example.org:5432" and fd3.runtime == "runsc"
    assert fd3.success == "exit-status" and "connect_us" in fd3.timing_line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("format = 1", "format = 2"), "format: must be 1"),
        (('connection = "direct"', 'connection = "pooled"'), "scenarios.kv-direct.connection: must be one of direct"),
        (('backend = "kv"', 'backend = "nope"'), "scenarios.kv-direct.backend: no backend 'nope'"),
        (('ready_log = "Ready"', ""), "backends.kv: needs a readiness check"),
        (("port = 6379", "port = 70000"), "backends.kv.port: must be a TCP port number"),
        (('"db.example.org:5432"', '"db.example.org"'), "backends.theirs.address: must be host:port"),
        (('"{target}"', '"{host}"'), "unknown placeholder(s) ['host']"),
        (
            ("timing_line = 'connect_us=(?P<connect_us>[0-9.]+)'", "timing_line = 'x=([0-9]+)'"),
            "named group connect_us",
        ),
        (('success = "exit-status"', ""), "applies only to success = 'exit-status'"),
        (('network = "none"\nruntime', 'network = "host"\nruntime'), "network: must be one of bridge, none"),
        (("[scenarios.kv-direct]", "[scenarios.KV_direct]"), "scenarios.KV_direct: an id is"),
        (('build = "function"', 'build = "missing"'), "has no Dockerfile"),
        (('build = "function"', 'build = "function"\nimage = "x:1"'), "either image or build"),
        (('backend = "kv"', 'backend = "kv"\nretries = 3'), "unknown key(s) retries"),
    ],
)
def test_invalid_files_say_where_and_why(project: Path, change: tuple[str, str], message: str) -> None:
    assert change[0] in GOOD
    path = write(project, GOOD.replace(change[0], change[1], 1))
    with pytest.raises(ScenarioFileError) as info:
        load_scenario_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_direct_without_network_is_rejected(project: Path) -> None:
    text = GOOD.replace(
        'connection = "direct"\nbackend = "kv"', 'connection = "direct"\nbackend = "kv"\nnetwork = "none"'
    )
    with pytest.raises(ScenarioFileError, match="a direct connection needs a network"):
        load_scenario_file(write(project, text))


def test_external_backend_cannot_have_startup_keys(project: Path) -> None:
    text = GOOD.replace('address = "db.example.org:5432"', 'address = "db.example.org:5432"\nready_tcp = true')
    with pytest.raises(ScenarioFileError, match="apply only to a backend the harness starts"):
        load_scenario_file(write(project, text))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError, match="cannot read"):
        load_scenario_file(tmp_path / "absent.toml")
    with pytest.raises(ScenarioFileError, match="not valid TOML"):
        load_scenario_file(write(tmp_path, "format = = 1"))
    with pytest.raises(ScenarioFileError, match="no scenario defined"):
        load_scenario_file(write(tmp_path, "format = 1\n"))
