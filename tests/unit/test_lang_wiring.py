"""The language, entrypoint and proxy axes wired into the harness: function images and
commands per language/entrypoint, pulled-in references, the hand-out and server-session balances,
the language and PostgreSQL tables, and the refill that must not overfill while idle plug-in
sessions are out for a proof of life."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_pool_manager_support import Echo, Manager, short_tmpdir

from coldstart_bench.analyse.report.wire_sections import wire_sections
from coldstart_bench.analyse.wire_tables import language_rows, pg_proxy_rows
from coldstart_bench.catalogue import LANG_FAMILY, PG_PROXY_FAMILY, Scenario, default_catalogue
from coldstart_bench.measure.accounting import HandoutLedger, SessionLedger, pools_settled
from coldstart_bench.measure.function_specs import SpecError, echo_command, image_key, pg_route
from coldstart_bench.plan import PlanSettings, plan
from components import protocol

NAMES = {"target": "echo:7000", "socket": "/run/cpm/pool.sock", "pool": "echo", "payload_size": 64}


def test_each_language_and_entrypoint_gets_its_image_and_command() -> None:
    cat = default_catalogue()
    node_direct, node_fd3 = cat.by_id("node-direct"), cat.by_id("node-socket")
    assert image_key(node_direct) == image_key(node_fd3) == "nodefunction"
    # Every arm starts through the entrypoint: the direct and in-process ones without an acquire.
    stamp = ["/usr/local/bin/fd3-entrypoint", "--no-acquire", "--"]
    assert echo_command(node_direct, **NAMES)[:7] == [
        *stamp,
        "node",
        "/app/components/node/function.js",
        "--mode",
        "direct",
    ]
    fd3 = echo_command(node_fd3, **NAMES)
    assert fd3[:6] == ["/usr/local/bin/fd3-entrypoint", "--socket", "/run/cpm/pool.sock", "--pool", "echo", "--"]
    assert fd3[6:10] == ["node", "/app/components/node/function.js", "--mode", "fd3"]
    assert "--socket" not in fd3[6:]  # Node takes no pool options: the entrypoint acquired for it
    c = echo_command(cat.by_id("c-socket-nonet"), **NAMES)
    assert c[6:9] == ["/usr/local/bin/c-function", "--mode", "fd3"] and image_key(cat.by_id("c-direct")) == "cfunction"
    py_fd3 = cat.by_id("socket-fd3")
    # The same image as the in-process arms it is compared with.
    assert image_key(py_fd3) == image_key(cat.by_id("socket")) == image_key(cat.by_id("direct")) == "function"
    assert echo_command(py_fd3, **NAMES)[6:11] == ["python3", "-m", "components.function", "--mode", "fd3"]
    socket_cmd = echo_command(cat.by_id("socket"), **NAMES)
    assert socket_cmd[:8] == [*stamp, "python3", "-m", "components.function", "--mode", "socket"]
    assert echo_command(cat.by_id("socket-return"), **NAMES)[-1] == "--release"


def test_combinations_no_function_supports_are_clear_errors() -> None:
    with pytest.raises(SpecError, match="cannot acquire from the pool manager itself"):
        echo_command(Scenario("x", "socket", language="node"), **NAMES)
    with pytest.raises(SpecError, match="no function in language 'go'"):
        image_key(Scenario("x", "direct", language="go"))
    with pytest.raises(SpecError, match="entrypoint 'init'"):
        image_key(Scenario("x", "socket", entrypoint="init"))
    with pytest.raises(SpecError, match="release"):
        echo_command(Scenario("x", "socket", language="c", entrypoint="fd3", release=True), **NAMES)


class _Db:
    host, port = "csb-pg-x", 5432


class _Bouncer:
    name = "csb-pgb-x"
    socket_mount: ClassVar[dict[str, dict[str, str]]] = {"/tmp/sock": {"bind": "/run/pgbouncer", "mode": "rw"}}


def test_pg_routes_direct_pgbouncer_tcp_and_unix() -> None:
    cat = default_catalogue()
    assert pg_route(cat.by_id("pg-direct"), _Db()).host == "csb-pg-x"
    tcp = pg_route(cat.by_id("pg-pgbouncer"), _Db(), _Bouncer())
    assert (tcp.host, tcp.port, tcp.binds) == ("csb-pgb-x", 6432, {})
    unix = pg_route(cat.by_id("pg-pgbouncer-unix"), _Db(), _Bouncer())
    assert (unix.host, unix.port) == ("/run/pgbouncer", 6432) and unix.binds == _Bouncer.socket_mount
    with pytest.raises(SpecError, match="not running"):
        pg_route(cat.by_id("pg-pgbouncer"), _Db(), None)


def test_families_declare_the_axes() -> None:
    cat = default_catalogue()
    lang = {s.id: s for s in cat.family(LANG_FAMILY)}
    assert {s.language for s in lang.values()} == {"node", "c", "python"}
    assert all(s.expect_path == "fd3" for s in lang.values() if s.mode == "socket")
    assert all(s.entrypoint == "fd3" for s in lang.values() if s.mode == "socket")
    proxy = cat.family(PG_PROXY_FAMILY)
    assert {s.proxy for s in proxy} == {"pgbouncer", "pgbouncer-unix"}
    assert all(s.backend == "pg" and s.mode == "direct" for s in proxy)
    assert next(s for s in proxy if s.proxy == "pgbouncer-unix").network == "none"


def test_selecting_pgbouncer_pulls_in_the_three_way_comparison() -> None:
    cat = default_catalogue()
    selected = ["pg-pgbouncer", "pg-pgbouncer-unix"]
    pulled = cat.pulled_in(selected)
    assert [s.id for s in pulled] == ["pg-direct", "pg-socket"]
    p = plan(PlanSettings(iterations=4, seed=1), [cat.by_id(s) for s in selected], pulled)
    assert set(p.ids) == {*selected, "pg-direct", "pg-socket"} and p.pulled == ["pg-direct", "pg-socket"]
    assert p.to_dict()["pulled"] == ["pg-direct", "pg-socket"]
    # Selected already: not pulled twice.
    again = plan(PlanSettings(iterations=4, seed=1), [cat.by_id(s) for s in [*selected, "pg-direct"]], pulled)
    assert again.ids.count("pg-direct") == 1 and again.pulled == ["pg-socket"]
    assert [s.id for s in cat.pulled_in(["socket-fd3"])] == ["socket", "direct"]
    assert cat.pulled_in(["socket", "direct"]) == []  # the thesis's scenarios pull nothing


def test_pgbouncer_is_skipped_against_an_external_server() -> None:
    cat = default_catalogue()
    p = plan(PlanSettings(iterations=2, pg_external=object()), [cat.by_id("pg-pgbouncer"), cat.by_id("pg-direct")])
    assert p.ids == ["pg-direct"] and "PgBouncer" in p.skip_reason("pg-pgbouncer")


def test_handout_ledger_counts_fd3_and_socket_paths_as_injected() -> None:
    ledger = HandoutLedger()
    ledger.count([{"path": "fd3"}, {"path": "socket"}, {"path": "direct"}, {"path": "fallback"}, None])
    stats = {"pools": {"echo": {"handed_out": 1}, "pg": {"handed_out": 0}}}
    ledger.retire({"pools": {"echo": {"handed_out": 1}}})  # a manager restarted mid-run
    assert ledger.problems(stats, running=True) == []
    ledger.count([{"path": "fd3"}])
    assert "handed out 2 connections but 3 cold starts" in ledger.problems(stats, running=True)[0]
    assert ledger.problems(None, running=False)[0].startswith("pool managers handed out 1")


def test_session_ledger_attributes_each_window_and_waits_for_a_stable_counter() -> None:
    counter = iter([10, 10, 13, 14, 14, 20, 20])
    settles: list[int] = []
    ledger = SessionLedger(lambda: next(counter), lambda: settles.append(1), stable_wait=0, sleep=lambda _s: None)
    ledger.open("a")  # reads 10, 10
    ledger.count("a", 3)
    ledger.count("b", 5)  # not the open window: ignored
    ledger.open("b")  # closes a (13, 14, 14 -> 4 sessions); b starts from that reading, nothing read again
    ledger.count("b", 2)
    ledger.close()  # 20, 20 -> 6
    ledger.close()  # nothing open: no reading
    assert ledger.tallies == {
        "a": {"sessions": 4, "cold_starts": 3, "blocks": 1, "unstable": 0},
        "b": {"sessions": 6, "cold_starts": 2, "blocks": 1, "unstable": 0},
    }
    assert len(settles) == 3  # before every reading: refills finish first


def test_session_ledger_takes_a_fresh_baseline_after_a_touch_or_an_unstable_close() -> None:
    counter = iter([0, 0, 2, 2, 5, 5, 7, 8, 9, 9, 11, 11, 12, 12])
    ledger = SessionLedger(lambda: next(counter), lambda: None, stable_wait=0, stable_reads=2, sleep=lambda _s: None)
    ledger.open("a")  # 0, 0
    ledger.close()  # 2, 2 -> a: 2
    ledger.touch()  # e.g. a pool manager starts and opens 3 sessions of its own
    ledger.open("b")  # fresh baseline 5, 5: the manager's sessions are no arm's
    ledger.close()  # 7, 8: not stable after two reads -> b: 3, flagged
    ledger.open("c")  # an unstable reading is no baseline: 9, 9
    ledger.close()  # 11, 11 -> c: 2
    ledger.open("d")  # reuses 11
    ledger.close()  # 12, 12 -> d: 1
    sessions = {k: (v["sessions"], v["unstable"]) for k, v in ledger.tallies.items()}
    assert sessions == {"a": (2, 0), "b": (3, 1), "c": (2, 0), "d": (1, 0)}


def test_pools_settled() -> None:
    full = {"idle": 16, "settling": 0, "connecting": 0, "waiters": 0, "size": 16, "min_idle": 16, "backend_up": True}
    assert pools_settled({"pools": {"pg": full}})
    assert not pools_settled({"pools": {"pg": full | {"idle": 15}}})
    assert not pools_settled({"pools": {"pg": full | {"connecting": 1}}})
    assert pools_settled({"pools": {"pg": full | {"idle": 0, "backend_up": False}}})


def _entry(declared: dict[str, Any], **medians: float) -> dict[str, Any]:
    return {k: {"median": v} for k, v in medians.items()} | {"declared": declared, "paths": {"fd3": 3}}


def test_language_and_pg_proxy_tables_from_declared_metadata() -> None:
    cat = default_catalogue()
    ids = ["node-direct", "node-socket", "socket", "direct", "socket-fd3"]
    med = {
        "node-direct": {"connect_us": 18000.0},
        "node-socket": {"connect_us": 4500.0, "runtime_startup_us": 90000.0},
        "socket": {"connect_us": 900.0},
        "direct": {"connect_us": 3000.0},
        "socket-fd3": {"connect_us": 800.0},
    }
    scenarios = {i: _entry(cat.by_id(i).declared(), **med[i]) for i in ids}
    rows = {r["scenario"]: r for r in language_rows(scenarios)}
    assert set(rows) == {"node-socket", "socket-fd3", "socket"}  # socket: the in-process reference of socket-fd3
    assert rows["node-socket"]["direct"] == "node-direct" and rows["node-socket"]["connect_speedup"] == 4.0
    assert rows["node-socket"]["runtime_startup_us"] == 90000.0 and "net.Socket" in rows["node-socket"]["how"]
    assert rows["socket-fd3"]["direct"] == "direct" and rows["socket"]["entrypoint"] == "in-process"

    pg_ids = ["pg-direct", "pg-socket", "pg-pgbouncer", "pg-direct-10ms"]
    pg = {i: _entry(cat.by_id(i).declared(), connect_us=1000.0, query_p50_us=200.0) for i in pg_ids}
    env = {"pg_sessions_by_scenario": {"pg-direct": {"sessions": 12, "cold_starts": 12}}}
    proxy = {r["scenario"]: r for r in pg_proxy_rows(pg, env)}
    assert set(proxy) == {"pg-direct", "pg-socket", "pg-pgbouncer"}  # the delayed arm is no part of it
    assert proxy["pg-pgbouncer"]["route"] == "pgbouncer" and proxy["pg-socket"]["route"] == "injected session"
    assert proxy["pg-direct"]["sessions_per_cold_start"] == 1.0 and proxy["pg-socket"]["server_sessions"] is None
    assert proxy["pg-direct"]["query_p50_us"] == 200.0
    assert pg_proxy_rows({i: pg[i] for i in ["pg-direct", "pg-socket"]}, env) == []  # no proxied arm, no table
    sections = wire_sections({"languages": list(rows.values()), "pg_proxy": list(proxy.values())})
    assert [s.heading.split(":")[0] for s in sections] == ["Languages", "PostgreSQL"]
    assert any("4.0×" in cell for cell in sections[0].rows[0])


FAKE_KIND = textwrap.dedent(
    '''
    """Fake pool kind whose quick check never decides: every idle session gets a background check."""
    import socket
    import time

    def open_session(config):
        host, port = config["target"].rsplit(":", 1)
        return socket.create_connection((host, int(port)), timeout=2), {}

    def check_session(sock):
        time.sleep(0.05)
        return True

    def quick_check(sock):
        return None
    '''
)


def test_refill_does_not_overfill_while_idle_sessions_are_refreshed(echo: Echo) -> None:
    with short_tmpdir() as d:
        (d / "refreshkind.py").write_text(FAKE_KIND)
        pools = {"fake": {"kind": "fake", "module": "refreshkind", "target": echo.target, "size": 3}}
        (d / "cfg.json").write_text(json.dumps({"pools": pools}))
        old = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = str(d) + (os.pathsep + old if old else "")
        try:
            m = Manager(d / "m.sock", echo.target, 3, "--config", str(d / "cfg.json"), "--pool", "fake")
        finally:
            os.environ["PYTHONPATH"] = old
        try:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:  # several sweeps, each refreshing every idle session
                st = m.stats()["pools"]["fake"]
                assert st["idle"] <= 3 and st["refills"] == 3, st
                time.sleep(0.1)
            sock, _ = protocol.acquire(m.sock_path, "fake")
            sock.close()
        finally:
            m.stop()


def test_report_campaign_names_the_pulled_in_scenarios() -> None:
    from coldstart_bench.analyse.report.content import Para, plan_blocks

    texts = [
        b.text for b in plan_blocks({"cold_starts": 4, "order": [], "pulled": ["pg-direct"]}) if isinstance(b, Para)
    ]
    assert any("Pulled in" in t and "pg-direct" in t for t in texts)
