from __future__ import annotations

import json

import pytest

from coldstart_bench import cli, doctor
from coldstart_bench.doctor import Facts, Family, ImageState, KernelFacts

ENGINE_INFO = {
    "ServerVersion": "27.3.1",
    "Driver": "overlay2",
    "CgroupVersion": "2",
    "CgroupDriver": "systemd",
    "DefaultRuntime": "runc",
    "Runtimes": {"runc": {"path": "runc"}, "io.containerd.runc.v2": {"path": "runc"}},
    "OperatingSystem": "Debian GNU/Linux 12 (bookworm)",
    "KernelVersion": "6.1.0",
}


def facts(**overrides: object) -> Facts:
    base = Facts(
        info=dict(ENGINE_INFO),
        version={"Version": "27.3.1", "ApiVersion": "1.47"},
        kernel=KernelFacts(netem=True, nfqueue=False, ktls=False, source="engine probe"),
        base_route="mmdebstrap",
        images=[ImageState("echo", "coldstart-bench/echo:abc", "current")],
        host_programs={"mmdebstrap": True, "C compiler": True},
    )
    for key, value in overrides.items():
        setattr(base, key, value)
    return base


def by_name(f: Facts) -> dict[str, doctor.FamilyStatus]:
    return {s.name: s for s in doctor.family_status(f)}


def test_every_family_listed_and_runtimes_need_a_second_runtime() -> None:
    status = by_name(facts())
    assert set(status) == {fam.name for fam in doctor.FAMILIES}
    assert status["thesis"].ok and status["pg"].ok and status["redis"].ok
    assert not status["runtimes"].ok and status["runtimes"].missing == ("alt-runtime",)
    assert "daemon.json" in status["runtimes"].todo[0]


def test_registered_runsc_enables_runtimes() -> None:
    info = {**ENGINE_INFO, "Runtimes": {"runc": {}, "runsc": {"path": "/usr/bin/runsc"}}}
    assert by_name(facts(info=info))["runtimes"].ok


def test_no_delay_backend_blocks_the_delay_families_only() -> None:
    status = by_name(facts(kernel=KernelFacts(netem=False, nfqueue=False, ktls=True)))
    assert not status["thesis"].ok and not status["pg"].ok
    assert status["burst"].ok and status["tls"].ok
    assert "modprobe sch_netem" in status["thesis"].todo[0]


def test_no_engine_blocks_everything_but_the_host_side_family() -> None:
    status = by_name(facts(info={}, engine_error="no Docker engine answers"))
    assert [s.name for s in status.values() if s.ok] == ["pool-load"]


def test_no_base_route_says_how_to_get_one() -> None:
    status = by_name(facts(base_route="", base_next=""))
    assert "apt-get install mmdebstrap" in status["burst"].todo[0]
    assert by_name(facts(base_route="", base_next="next run: pull ..."))["burst"].ok


def test_ktls_is_optional_for_tls_and_reported() -> None:
    tls = by_name(facts())["tls"]
    assert tls.ok and "modprobe tls" in tls.optional_missing[0]


def test_a_new_family_is_one_entry_and_unknown_requirements_are_an_error() -> None:
    families = (*doctor.FAMILIES, Family("mysql", "MySQL backend", ("engine", "base")))
    assert {s.name: s.ok for s in doctor.family_status(facts(), families)}["mysql"]
    with pytest.raises(KeyError, match="unknown requirement"):
        doctor.family_status(facts(), (Family("x", "x", ("gpu",)),))


def test_render_shows_engine_kernel_images_and_families() -> None:
    text = "\n".join(doctor.render(facts()))
    expected_parts = ["Docker 27.3.1", "overlay2", "v2 (systemd driver)", "runc", "netem yes", "NFQUEUE/iptables no"]
    expected_parts += ["kernel TLS    no", "route mmdebstrap", "echo        current", "runtimes   cannot run"]
    for expected in expected_parts:
        assert expected in text, expected


def test_engine_locality() -> None:
    assert doctor.engine_is_local("")
    assert doctor.engine_is_local("unix:///tmp/other.sock")
    assert doctor.engine_is_local("tcp://127.0.0.1:2375")
    assert not doctor.engine_is_local("tcp://10.0.0.5:2376")
    assert not doctor.engine_is_local("ssh://bench@db-host")


def test_probe_output_parsing() -> None:
    k = doctor.parse_probe_output("netem False\nnfqueue True\nktls True\nnoise\n")
    assert (k.netem, k.nfqueue, k.ktls, k.source) == (False, True, True, "engine probe")


def test_cli_doctor_exits_zero_and_json_lists_families(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(doctor, "gather", lambda: facts())
    assert cli.main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {f["name"] for f in data["families"]} == {fam.name for fam in doctor.FAMILIES}
    assert cli.main(["doctor"]) == 0
    assert "scenario families" in capsys.readouterr().out


def test_cli_requires_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "doctor" in capsys.readouterr().err


def test_a_subcommand_is_one_entry() -> None:
    ran: list[str] = []
    extra = cli.Subcommand("why", "summary", lambda p: p.add_argument("run_dir"), lambda a: ran.append(a.run_dir) or 3)
    parser = cli.build_parser([*cli.SUBCOMMANDS, extra])
    args = parser.parse_args(["why", "reports/latest"])
    assert args._run(args) == 3 and ran == ["reports/latest"]
