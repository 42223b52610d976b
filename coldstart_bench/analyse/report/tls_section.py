"""The report's TLS section: the thesis's Table 1 re-measured, and where TLS set-up time goes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .content import Bullets, Heading, Para, Table, num

_PHASE_NAMES = {
    "resolve_us": "resolve (getaddrinfo)",
    "handshake_us": "TCP connect",
    "ssl_import_us": "import ssl (loads libssl/libcrypto)",
    "tls_context_us": "SSLContext + CA file",
    "tls_handshake_us": "TLS 1.3 handshake + verification",
    "fd_recv_us": "acquire over the Unix socket (fd + meta.tls)",
    "tls_setup_us": "continue the session (record layer, libcrypto, keys)",
}


def _row(label: str, d: Mapping[str, Any], thesis_mean: float) -> list[str]:
    return [label, str(d["n"]), num(d["mean"]), num(d["p95"]), num(d["median"]), num(thesis_mean)]


def tls_blocks(tls: Mapping[str, Any] | None) -> list[Any]:
    if not tls:
        return []
    t1 = tls["table1"]
    tcp, tls13 = t1["tcp_connect_us"], t1["tls13_connect_us"]
    thesis = t1["thesis"]
    blocks: list[Any] = [
        Heading("TLS 1.3 (thesis Table 1 re-measured)"),
        Para(
            f"TCP from {', '.join(tcp['scenarios'])} ({tcp['metric']}); TLS 1.3 from "
            f"{', '.join(tls13['scenarios'])} ({tls13['metric']}), measured inside the cold function."
        ),
        Table(
            ["connection", "n", "mean µs", "p95 µs", "median µs", "thesis mean µs"],
            [
                [
                    "TCP",
                    str(tcp["n"]),
                    num(tcp["mean"]),
                    num(tcp["p95"]),
                    num(tcp["median"]),
                    num(thesis["tcp_mean_us"]),
                ],
                [
                    "TLS 1.3",
                    str(tls13["n"]),
                    num(tls13["mean"]),
                    num(tls13["p95"]),
                    num(tls13["median"]),
                    num(thesis["tls_mean_us"]),
                ],
                ["TLS / TCP (mean)", "", num(t1["tls_over_tcp_mean"], 2), "", "", num(thesis["tls_over_tcp_mean"], 2)],
            ],
        ),
    ]
    rows = []
    for group, label in (("direct_phases_us", "direct"), ("injected_phases_us", "injected")):
        for metric, d in (tls.get(group) or {}).items():
            if d["n"]:
                rows.append([label, _PHASE_NAMES.get(metric, metric), str(d["n"]), num(d["mean"]), num(d["median"])])
    if rows:
        blocks.append(Heading("Where TLS set-up time goes", 3))
        blocks.append(Table(["function", "phase", "n", "mean µs", "median µs"], rows))
    notes = []
    if tls.get("paths"):
        notes.append(f"injected sessions continued on: {', '.join(tls['paths'])}")
    if tls.get("cipher_suites"):
        notes.append(f"cipher suites negotiated: {', '.join(tls['cipher_suites'])}")
    if notes:
        blocks.append(Bullets(notes))
    return blocks
