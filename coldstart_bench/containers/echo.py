"""The echo backend, plain TCP or TLS (components/echo_server.py in the echo image)."""

from __future__ import annotations

from collections.abc import Sequence

from .images import project_image
from .service import ServiceContainer, Volume

ECHO_PORT = 7000


class EchoServer(ServiceContainer):
    """``with EchoServer(network="net") as echo:`` — reachable as ``echo.host:echo.port`` (``echo.target``)
    from containers on that network."""

    role = "echo"

    def __init__(
        self,
        image: str | None = None,
        *,
        network: str,
        port: int = ECHO_PORT,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        start_timeout: float = 60.0,
        extra_args: Sequence[str] = (),
        volumes: Sequence[Volume] = (),
    ) -> None:
        command = ["python3", "-m", "components.echo_server", "--host", "0.0.0.0", "--port", str(port), *extra_args]
        super().__init__(
            image or project_image("echo"),
            command,
            network=network,
            name=name,
            labels=labels,
            volumes=volumes,
            start_timeout=start_timeout,
        )
        self.port = port

    @property
    def host(self) -> str:
        return self.name

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


class TlsEchoServer(EchoServer):
    """The echo backend speaking TLS with a server certificate and key from ``cert_dir`` (files
    ``server.pem`` and ``server.key``, e.g. measure/tls_certs.make_run_certificates)."""

    role = "tlsecho"
    CERT_MOUNT = "/run/tls-server"

    def __init__(
        self,
        image: str | None = None,
        *,
        network: str,
        cert_dir: str,
        port: int = 7443,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        start_timeout: float = 60.0,
        cert_mount: str = CERT_MOUNT,
    ) -> None:
        super().__init__(
            image,
            network=network,
            port=port,
            name=name,
            labels=labels,
            start_timeout=start_timeout,
            extra_args=("--tls-cert", f"{cert_mount}/server.pem", "--tls-key", f"{cert_mount}/server.key"),
            volumes=((cert_dir, cert_mount, "ro"),),
        )
