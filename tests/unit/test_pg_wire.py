"""The adopt-client against a real PostgreSQL: sessions opened by pg_pool, continued by pg_wire."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from components import pg_pool, pg_wire
from tests.support.pg_cluster import LocalCluster


@pytest.fixture
def session(cluster: LocalCluster) -> Iterator[pg_wire.Session]:
    sock, meta = pg_pool.open_session(cluster.session_config())
    sess = pg_wire.Session.adopt(sock, meta)
    yield sess
    sess.close()


# --- pure helpers ----------------------------------------------------------------------------


def test_encode_param_text_forms() -> None:
    assert pg_wire.encode_param(None) is None
    assert pg_wire.encode_param(True) == "true"
    assert pg_wire.encode_param(False) == "false"
    assert pg_wire.encode_param(b"\x00\xff") == "\\x00ff"
    assert pg_wire.encode_param(12) == "12"


def test_result_rowcount_from_command_tag() -> None:
    assert pg_wire.Result(command="INSERT 0 3").rowcount == 3
    assert pg_wire.Result(command="UPDATE 1").rowcount == 1
    assert pg_wire.Result(command="BEGIN").rowcount == -1


def test_parse_fields_of_error_response() -> None:
    fields = pg_wire.parse_fields(b"SERROR\x00VERROR\x00C42601\x00Msyntax error\x00\x00")
    assert fields == {"S": "ERROR", "V": "ERROR", "C": "42601", "M": "syntax error"}
    assert pg_wire.describe_fields(fields)["sqlstate"] == "42601"


def test_protocol_error_on_garbage() -> None:
    a, b = socket.socketpair()
    try:
        b.sendall(b"Z\x00\x00\x00\x02")  # length below the minimum of 4
        with pytest.raises(pg_wire.ProtocolError):
            pg_wire.Session(a).read_message()
    finally:
        a.close()
        b.close()


def test_eof_raises_connection_closed() -> None:
    a, b = socket.socketpair()
    b.close()
    sess = pg_wire.Session(a)
    with pytest.raises(pg_wire.ConnectionClosed):
        sess.sync()
    assert sess.closed
    sess.close()


# --- against the server ------------------------------------------------------------------------


def test_simple_query_multiple_statements(session: pg_wire.Session) -> None:
    results = session.simple_query("SELECT 1 AS a, 'x' AS b; SELECT NULL::int AS c; SET search_path = public")
    assert [r.command for r in results] == ["SELECT 1", "SELECT 1", "SET"]
    assert results[0].columns == ["a", "b"]
    assert results[0].rows == [("1", "x")]
    assert results[1].rows == [(None,)]
    assert session.tx_status == pg_wire.IDLE


def test_empty_query(session: pg_wire.Session) -> None:
    assert session.simple_query("") == [pg_wire.Result()]


def test_extended_query_parameters(session: pg_wire.Session) -> None:
    res = session.query(
        "SELECT $1::int + $2::int, $3::text IS NULL, $4::text, $5::bool, $6::bytea",
        (40, 2, None, "grüße 🐘", True, b"\x01\x02"),
    )
    assert res.rows == [("42", "t", "grüße 🐘", "t", "\\x0102")]
    assert res.command == "SELECT 1"


def test_extended_query_many_rows(session: pg_wire.Session) -> None:
    res = session.query("SELECT g, repeat('x', 100) FROM generate_series(1, $1::int) g", (5000,))
    assert len(res.rows) == 5000
    assert res.rows[-1][0] == "5000"
    assert res.rowcount == 5000


def test_syntax_error_gives_sqlstate_and_session_survives(session: pg_wire.Session) -> None:
    with pytest.raises(pg_wire.PgError) as info:
        session.query("SELEC 1")
    assert info.value.sqlstate == "42601"
    assert not info.value.fatal
    # After the error the server skipped to Sync; the session is at ReadyForQuery again.
    assert session.tx_status == pg_wire.IDLE
    assert session.query("SELECT $1::int * 2", (21,)).scalar() == "42"
    with pytest.raises(pg_wire.PgError) as info2:
        session.simple_query("SELECT 1; SELEC 2")
    assert info2.value.sqlstate == "42601"
    assert session.simple_query("SELECT 3")[0].scalar() == "3"


def test_transaction_status_and_failed_transaction(session: pg_wire.Session) -> None:
    session.begin()
    assert session.tx_status == pg_wire.IN_TRANSACTION and session.in_transaction
    with pytest.raises(pg_wire.PgError) as info:
        session.query("SELECT 1 / $1::int", (0,))
    assert info.value.sqlstate == "22012"
    assert session.tx_status == pg_wire.FAILED_TRANSACTION
    with pytest.raises(pg_wire.PgError) as info2:
        session.query("SELECT 1")
    assert info2.value.sqlstate == "25P02"  # in_failed_sql_transaction
    with pytest.raises(pg_wire.PgWireError, match="rolled back"):
        session.commit()
    assert session.tx_status == pg_wire.IDLE
    session.begin()
    session.rollback()
    assert session.sync() == pg_wire.IDLE


def test_constraint_violation_fields(session: pg_wire.Session) -> None:
    session.query("INSERT INTO history (transfer_id, from_id, to_id, amount) VALUES ('dup-wire', 1, 2, 5)")
    with pytest.raises(pg_wire.PgError) as info:
        session.query("INSERT INTO history (transfer_id, from_id, to_id, amount) VALUES ('dup-wire', 1, 2, 5)")
    assert info.value.sqlstate == "23505"
    assert info.value.fields.get("n") == "history_transfer_id_key"
    session.query("DELETE FROM history WHERE transfer_id = 'dup-wire'")


def test_notice_and_parameter_status(session: pg_wire.Session) -> None:
    session.simple_query("DO $$ BEGIN RAISE NOTICE 'hello %', 7; END $$")
    assert session.notices and session.notices[-1]["M"] == "hello 7"
    # application_name is GUC_REPORT: the server announces the change with ParameterStatus.
    session.simple_query("SET application_name = 'wire-test'")
    assert session.parameters["application_name"] == "wire-test"


def test_notifications_are_collected(session: pg_wire.Session) -> None:
    session.simple_query("LISTEN wire_chan")
    session.simple_query("NOTIFY wire_chan, 'payload'")
    assert session.notifications and session.notifications[-1][1:] == ("wire_chan", "payload")


def test_copy_from_stdin_is_refused_cleanly(session: pg_wire.Session) -> None:
    session.simple_query("CREATE TEMP TABLE t_copy (x int)")
    with pytest.raises(pg_wire.PgError) as info:
        session.simple_query("COPY t_copy FROM STDIN")
    assert info.value.sqlstate == "57014"  # query_canceled: COPY failed on our CopyFail
    assert session.simple_query("SELECT count(*) FROM t_copy")[0].scalar() == "0"


def test_cancel_request_packet(session: pg_wire.Session) -> None:
    packet = session.cancel_request()
    length, code, pid, key = struct.unpack("!iiii", packet)
    assert (length, code, pid) == (16, 80877102, session.backend_pid)
    assert key == session.secret_key


def test_cancel_request_cancels_running_query(cluster: LocalCluster, session: pg_wire.Session) -> None:
    session.settimeout(10)
    session._send(pg_wire._message(b"Q", b"SELECT pg_sleep(5)\x00"))
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=5) as c:
        c.sendall(session.cancel_request())
    started = time.monotonic()
    with pytest.raises(pg_wire.PgError) as info:
        session._collect()
    assert info.value.sqlstate == "57014"
    assert time.monotonic() - started < 4
    assert session.sync() == pg_wire.IDLE


def test_terminated_backend_raises_fatal(cluster: LocalCluster, session: pg_wire.Session) -> None:
    assert cluster.terminate_backends(application_name="coldstart-cpm") >= 1
    with pytest.raises((pg_wire.PgError, pg_wire.ConnectionClosed)) as info:
        for _ in range(50):  # the FATAL arrives asynchronously; bounded
            session.simple_query("SELECT 1")
            time.sleep(0.02)
    if isinstance(info.value, pg_wire.PgError):
        assert info.value.fatal and info.value.sqlstate == "57P01"
    assert session.closed


def test_terminate_ends_the_backend(cluster: LocalCluster) -> None:
    sock, meta = pg_pool.open_session(cluster.session_config(application_name="wire-terminate"))
    sess = pg_wire.Session.adopt(sock, meta)
    assert cluster.backend_pids(application_name="wire-terminate") == [meta["backend_pid"]]
    sess.close()
    sess.close()  # idempotent
    for _ in range(100):
        if not cluster.backend_pids(application_name="wire-terminate"):
            break
        time.sleep(0.02)
    assert cluster.backend_pids(application_name="wire-terminate") == []
