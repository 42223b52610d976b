"""Throw-away TLS certificates for one run: a private CA, a server certificate, a client certificate.

Made with the ``openssl`` command line (present wherever OpenSSL is installed; no Python
package needed) on the harness side only: the images never need it, they get the files
bind-mounted. ECDSA P-256 keys, valid for two days, nothing secret outlives the run directory.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class CertError(RuntimeError):
    """The certificates could not be made (no openssl, or it failed)."""


@dataclass(frozen=True)
class RunCertificates:
    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    server_names: tuple[str, ...]


def openssl_path() -> str | None:
    return shutil.which("openssl")


def _run(args: list[str], cwd: Path) -> None:
    binary = openssl_path()
    if binary is None:
        raise CertError("the openssl command is not installed (Debian: apt-get install openssl)")
    proc = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise CertError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


def _san(names: tuple[str, ...]) -> str:
    parts = []
    for name in names:
        try:
            ipaddress.ip_address(name)
            parts.append(f"IP:{name}")
        except ValueError:
            parts.append(f"DNS:{name}")
    return "subjectAltName=" + ",".join(parts)


def make_run_certificates(
    directory: str | os.PathLike[str], server_names: tuple[str, ...] = ("localhost", "127.0.0.1", "echo")
) -> RunCertificates:
    """Create ``ca.pem``, ``server.pem``/``server.key`` (for ``server_names``) and
    ``client.pem``/``client.key`` (for mutual TLS) in ``directory``; keys are mode 0600."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ca_ext = [
        "-subj",
        "/CN=run CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]
    _run(["req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", *ca_ext], d)
    for role, subject, extras in (
        ("server", f"/CN={server_names[0]}", [_san(server_names), "extendedKeyUsage=serverAuth"]),
        ("client", "/CN=coldstart-bench pool manager", ["extendedKeyUsage=clientAuth"]),
    ):
        _run(["req", *curve, "-keyout", f"{role}.key", "-out", f"{role}.csr", "-subj", subject], d)
        ext = d / f"{role}.ext"
        ext.write_text("\n".join(["basicConstraints=CA:FALSE", *extras]) + "\n", encoding="ascii")
        signing = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", ext.name]
        _run(["x509", "-req", "-in", f"{role}.csr", "-out", f"{role}.pem", *signing], d)
        (d / f"{role}.csr").unlink()
        ext.unlink()
    # Nobody signs anything else with this CA: its key goes now.
    (d / "ca.key").unlink()
    for key in ("server.key", "client.key"):
        os.chmod(d / key, 0o600)
    return RunCertificates(
        directory=d,
        ca_cert=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        client_cert=d / "client.pem",
        client_key=d / "client.key",
        server_names=tuple(server_names),
    )
