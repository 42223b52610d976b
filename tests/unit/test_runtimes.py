"""Runtime axis helpers without Docker: parsing, ids, daemon.json registration, probe verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench.measure import runtimes as rt


def test_parse_keeps_order_drops_duplicates_and_defaults_to_runc() -> None:
    assert rt.parse_runtimes("runc, runsc,crun,runsc") == ("runc", "runsc", "crun")
    assert rt.parse_runtimes(None) == rt.parse_runtimes("  ") == ("runc",)


@pytest.mark.parametrize(("value", "match"), [("runc,,runsc", "empty runtime name"), ("run c", "not a runtime name")])
def test_parse_refuses_bad_names_with_the_value(value: str, match: str) -> None:
    with pytest.raises(rt.RuntimeConfigError, match=match):
        rt.parse_runtimes(value)


def test_scenario_ids_carry_non_default_runtimes_only() -> None:
    assert rt.scenario_id("socket-nonet", "runc") == "socket-nonet"
    assert rt.scenario_id("socket-nonet", "runsc") == "socket-nonet@runsc"
    assert rt.split_scenario_id("socket-relay-nonet@runsc") == ("socket-relay-nonet", "runsc")
    assert rt.split_scenario_id("socket") == ("socket", "runc")


def test_merge_keeps_existing_keys_and_registrations() -> None:
    existing = {"mtu": 1400, "runtimes": {"crun": {"path": "/opt/crun"}}}
    merged = rt.merge_daemon_config(existing, ["runc", "runsc", "crun"])
    assert merged["mtu"] == 1400
    assert merged["runtimes"]["crun"] == {"path": "/opt/crun"}  # the operator's choice wins
    assert merged["runtimes"]["runsc"]["runtimeArgs"] == ["--network=none", "--host-uds=all"]
    assert "runc" not in merged["runtimes"]  # built in, never registered
    assert existing == {"mtu": 1400, "runtimes": {"crun": {"path": "/opt/crun"}}}  # input untouched


def test_merge_refuses_a_malformed_runtimes_key() -> None:
    with pytest.raises(rt.RuntimeConfigError, match="expected an object"):
        rt.merge_daemon_config({"runtimes": ["runsc"]}, ["runsc"])


def test_missing_runtime_message_is_the_configuration_to_add() -> None:
    msg = rt.missing_runtime_message("runsc", ["runc"])
    assert "apt-get install runsc" in msg and "kill -HUP $(pidof dockerd)" in msg
    snippet = json.loads(msg[msg.index("{") : msg.rindex("}") + 1])
    assert snippet == {"runtimes": {"runsc": rt.KNOWN_RUNTIMES["runsc"]}}


def test_engine_runtimes_reads_docker_info() -> None:
    class Client:
        def info(self) -> dict[str, Any]:
            return {"Runtimes": {"runc": {"path": "runc"}, "runsc": {"path": "/usr/bin/runsc"}}}

    assert set(rt.engine_runtimes(Client())) == {"runc", "runsc"}
    probe = rt.probe_runtime(Client(), "crun", image="unused")
    assert not probe.offered and "not registered" in probe.reason and probe.handoff == rt.NOT_POSSIBLE


def _probe(tcp: bool, unix: bool, runs: bool = True) -> rt.RuntimeProbe:
    dropped = "the reply arrived without its fd (dropped on the way in)"
    return rt.RuntimeProbe(
        runtime="x",
        offered=True,
        runs=runs,
        tcp_fd=rt.FdCheck(tcp, tcp, "" if tcp else dropped),
        unix_fd=rt.FdCheck(unix, unix, "" if unix else dropped),
        reason="" if runs else "cgroups in hybrid mode not supported",
    )


def test_verdicts_name_the_handoff_and_the_reason() -> None:
    assert _probe(True, True).handoff == rt.INJECTED
    gvisor = _probe(False, True)
    assert gvisor.handoff == rt.RELAY
    assert gvisor.unsupported_reason(rt.RELAY) is None
    reason = gvisor.unsupported_reason("inject")
    assert reason is not None and "TCP fd" in reason and "without its fd" in reason
    broken = _probe(False, False, runs=False)
    assert broken.handoff == rt.NOT_POSSIBLE
    assert "hybrid mode" in (broken.unsupported_reason(rt.RELAY) or "")
    assert broken.as_dict()["handoff"] == rt.NOT_POSSIBLE


def test_command_line_merges_a_daemon_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"log-driver": "json-file"}')
    assert rt.main(["daemon-json", "--merge", str(path), "runsc", "crun"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged["log-driver"] == "json-file" and set(merged["runtimes"]) == {"runsc", "crun"}
    assert rt.main(["daemon-json", "--merge", str(tmp_path / "absent.json"), "runsc"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"runtimes"}
    path.write_text("[1]")
    assert rt.main(["daemon-json", "--merge", str(path), "runsc"]) == 2
    assert "not a JSON object" in capsys.readouterr().err
    assert rt.main(["packages", "runc", "runsc", "crun"]) == 0
    assert capsys.readouterr().out.split() == ["runsc", "crun"]


def test_a_runtime_registered_without_network_cannot_run_direct_scenarios() -> None:
    gvisor = _probe(False, True)
    assert gvisor.unsupported_reason("direct") is None  # registration unknown: network assumed
    gvisor.registration = dict(rt.KNOWN_RUNTIMES["runsc"])
    assert not gvisor.sandbox_network
    assert "--network=none" in (gvisor.unsupported_reason("direct") or "")
    assert "--network=none" in (gvisor.unsupported_reason(rt.RELAY, needs_network=True) or "")
    assert gvisor.unsupported_reason(rt.RELAY) is None
