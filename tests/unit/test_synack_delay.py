"""SYN-ACK delay logic without the kernel: command lines, holding scheduler, backend choice."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from components import synack_delay as sd

# --- command lines -------------------------------------------------------------------------


def test_netem_commands_build_prio_netem_and_synack_filter() -> None:
    cmds = sd.netem_setup_commands("eth0", 7000, 50)
    assert cmds[0] == ["tc", "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio", "bands", "4"]
    assert cmds[1][:8] == ["tc", "qdisc", "add", "dev", "eth0", "parent", "1:4", "handle"]
    assert cmds[1][-3:] == ["netem", "delay", "50ms"]
    flt = " ".join(cmds[2])
    assert flt.startswith("tc filter add dev eth0 parent 1: protocol ip")
    assert "match ip protocol 6 0xff" in flt  # TCP only
    assert "match u16 7000 0xffff at 20" in flt  # source port
    assert "match u8 0x12 0x12 at 33" in flt  # SYN and ACK both set
    assert flt.endswith("flowid 1:4")


def test_netem_delay_keeps_fractional_milliseconds() -> None:
    assert sd.netem_setup_commands("eth0", 1, 12.5)[1][-1] == "12.5ms"


def test_netem_teardown_removes_root_qdisc() -> None:
    assert sd.netem_teardown_commands("eth1") == [["tc", "qdisc", "del", "dev", "eth1", "root"]]


def test_nfqueue_rule_matches_synack_from_port_and_never_blackholes() -> None:
    (add,) = sd.nfqueue_setup_commands(5432, 3)
    (delete,) = sd.nfqueue_teardown_commands(5432, 3)
    assert add[:4] == ["iptables", "-w", "5", "-A"]
    assert delete[:4] == ["iptables", "-w", "5", "-D"]
    assert add[4:] == delete[4:]  # -D must name exactly the rule -A added
    rule = " ".join(add[4:])
    assert rule == ("OUTPUT -p tcp --sport 5432 --tcp-flags SYN,ACK SYN,ACK -j NFQUEUE --queue-num 3 --queue-bypass")


def test_nfqueue_commands_can_use_another_iptables() -> None:
    assert sd.nfqueue_setup_commands(7000, 0, "iptables-legacy")[0][0] == "iptables-legacy"


# --- holding logic ---------------------------------------------------------------------------


class FakePacket:
    def __init__(self, n: int) -> None:
        self.n = n
        self.accepted_at: float | None = None

    def accept(self) -> None:
        assert self.accepted_at is None, "a packet gets exactly one verdict"
        self.accepted_at = time.monotonic()


def test_scheduler_releases_each_item_its_own_delay_after_arrival() -> None:
    s: sd.HoldScheduler[str] = sd.HoldScheduler(0.050)
    assert s.submit("a", 10.000) == pytest.approx(10.050)
    s.submit("b", 10.010)
    s.submit("c", 10.020)
    assert s.next_release() == pytest.approx(10.050)
    assert s.pop_due(10.049) == []
    assert s.pop_due(10.050) == ["a"]
    # b and c are not serialised behind a: each leaves 50 ms after its own arrival
    assert s.pop_due(10.061) == ["b"]
    assert s.pop_due(10.100) == ["c"]
    assert s.next_release() is None and len(s) == 0


def test_scheduler_out_of_order_arrivals_and_ties_keep_fifo() -> None:
    s: sd.HoldScheduler[int] = sd.HoldScheduler(0.010)
    s.submit(1, 5.0)
    s.submit(2, 4.0)
    s.submit(3, 5.0)
    assert s.pop_due(100.0) == [2, 1, 3]


def test_scheduler_pop_all_empties_in_release_order() -> None:
    s: sd.HoldScheduler[int] = sd.HoldScheduler(1.0)
    for i, t in enumerate([3.0, 1.0, 2.0]):
        s.submit(i, t)
    assert s.pop_all() == [1, 2, 0]
    assert len(s) == 0


def test_releaser_holds_many_packets_in_flight_each_for_the_delay() -> None:
    delay = 0.050
    released = threading.Event()
    packets = [FakePacket(i) for i in range(20)]
    submitted: dict[int, float] = {}

    def release(p: FakePacket) -> None:
        p.accept()
        if all(q.accepted_at is not None for q in packets):
            released.set()

    r: sd.Releaser[FakePacket] = sd.Releaser(delay, release).start()
    try:
        start = time.monotonic()
        for p in packets:
            submitted[p.n] = time.monotonic()
            r.submit(p, submitted[p.n])
            time.sleep(0.002)
        assert released.wait(5), "not every packet was released"
    finally:
        r.close()
    held = [p.accepted_at - submitted[p.n] for p in packets if p.accepted_at is not None]
    assert len(held) == 20
    assert min(held) >= delay
    assert max(held) < delay + 0.025
    # serialised holding would take 20 x 50 ms; concurrent holding about 50 ms + the arrivals
    assert max(p.accepted_at or 0 for p in packets) - start < 0.3


def test_releaser_close_flushes_what_is_held() -> None:
    packets = [FakePacket(i) for i in range(3)]
    r: sd.Releaser[FakePacket] = sd.Releaser(10.0, lambda p: p.accept()).start()
    for p in packets:
        r.submit(p)
    r.close(flush=True)
    assert all(p.accepted_at is not None for p in packets)


def test_releaser_after_close_releases_at_once() -> None:
    r: sd.Releaser[FakePacket] = sd.Releaser(10.0, lambda p: p.accept()).start()
    r.close()
    late = FakePacket(0)
    r.submit(late)
    assert late.accepted_at is not None


def test_releaser_reports_release_errors_and_keeps_going() -> None:
    errors: list[BaseException] = []
    done = threading.Event()

    def release(n: int) -> None:
        if n == 0:
            raise OSError("verdict failed")
        done.set()

    r: sd.Releaser[int] = sd.Releaser(0.001, release, on_error=errors.append).start()
    try:
        r.submit(0)
        r.submit(1)
        assert done.wait(5)
    finally:
        r.close()
    assert [str(e) for e in errors] == ["verdict failed"]


# --- backend choice and the CLI ---------------------------------------------------------------


class _FakeBackend(sd.Backend):
    def __init__(self, name: str, ok: bool) -> None:
        self.name, self.ok, self.stopped = name, ok, False

    def start(self) -> None:
        if not self.ok:
            raise sd.DelayError(f"{self.name}: unsupported")

    def stop(self) -> None:
        self.stopped = True


def _patch_backends(monkeypatch: pytest.MonkeyPatch, netem_ok: bool, nfqueue_ok: bool) -> None:
    monkeypatch.setattr(sd, "NetemBackend", lambda *a, **k: _FakeBackend("netem", netem_ok))
    monkeypatch.setattr(sd, "NfqueueBackend", lambda *a, **k: _FakeBackend("nfqueue", nfqueue_ok))


def test_auto_prefers_netem(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_backends(monkeypatch, netem_ok=True, nfqueue_ok=True)
    backend, errors = sd.start_backend("auto", "eth0", 7000, 50, 0)
    assert backend.name == "netem" and errors == []


def test_auto_falls_back_to_nfqueue_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_backends(monkeypatch, netem_ok=False, nfqueue_ok=True)
    backend, errors = sd.start_backend("auto", "eth0", 7000, 50, 0)
    assert backend.name == "nfqueue"
    assert errors == ["netem: unsupported"]


def test_explicit_backend_does_not_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    _patch_backends(monkeypatch, netem_ok=False, nfqueue_ok=True)
    with pytest.raises(sd.DelayError, match="netem: unsupported"):
        sd.start_backend("netem", "eth0", 7000, 50, 0)


def test_cli_exits_nonzero_with_clear_message_when_no_backend_works(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _patch_backends(monkeypatch, netem_ok=False, nfqueue_ok=False)
    assert sd.main(["--delay-ms", "50", "--port", "7000", "--dev", "eth0"]) == 2
    out, err = capsys.readouterr()
    assert "no SYN-ACK delay backend works here" in err
    assert "netem: unsupported" in err and "nfqueue: unsupported" in err
    assert json.loads(out.strip())["event"] == "error"


def test_cli_prints_ready_line_then_cleans_up_on_sigterm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = _FakeBackend("nfqueue", True)
    monkeypatch.setattr(sd, "start_backend", lambda *a: (fake, ["netem: unsupported"]))
    monkeypatch.setattr(sd.signal, "signal", lambda *a: None)
    stop = threading.Event()
    stop.set()  # as if SIGTERM had arrived right after the ready line
    assert sd.main(["--delay-ms", "25", "--port", "7001", "--dev", "eth0"], stop=stop) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ready: dict[str, Any] = lines[0]
    assert {k: ready[k] for k in ("event", "backend", "delay_ms", "port")} == {
        "event": "ready",
        "backend": "nfqueue",
        "delay_ms": 25.0,
        "port": 7001,
    }
    assert lines[-1]["event"] == "stopped"
    assert fake.stopped


def test_cli_rejects_nonpositive_delay() -> None:
    with pytest.raises(SystemExit):
        sd.main(["--delay-ms", "0", "--port", "7000"])


def test_cleanup_removes_qdisc_and_every_copy_of_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = {"iptables": 2, "iptables-legacy": 0}
    ran: list[list[str]] = []

    def fake_run_all(commands: Any) -> str | None:
        (argv,) = commands
        ran.append(argv)
        if argv[0] == "tc":
            return "tc: Cannot delete qdisc with handle of zero."
        if rules[argv[0]] > 0:
            rules[argv[0]] -= 1
            return None
        return "iptables: Bad rule (does a matching rule exist in that chain?)."

    monkeypatch.setattr(sd, "_run_all", fake_run_all)
    removed = sd.cleanup("eth0", 7000, 0)
    assert removed == ["iptables NFQUEUE rule for port 7000"] * 2
    assert rules == {"iptables": 0, "iptables-legacy": 0}
    assert len(ran) < 20  # bounded
