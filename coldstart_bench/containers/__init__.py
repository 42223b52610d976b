"""The parts of a testbed as testcontainers-style classes, each usable on its own:

    with BenchNetwork(client) as net, EchoServer(network=net.name, labels=net.labels) as echo, \\
            PoolManager(network=net.name, pools={"echo": {"target": echo.target}}, labels=net.labels) as pm, \\
            ColdStart(client, network=net.name, labels=net.labels) as cold_start:
        sample = cold_start(FunctionImage(), mode="socket", pool=pm)

Every part carries the run's labels (labels.run_labels) and removes what it created on leaving;
labels.sweep removes what a killed run left. The plugin's fixtures (bench_network, echo_server,
pool_manager, function_image, cold_start) are these classes, and measure/testbed.py composes them
for the built-in catalogue.
"""

from ..measure.database import PostgresBackend as Postgres
from ..measure.delay import SynAckDelay
from ..measure.pgbouncer import PgBouncerContainer as PgBouncer
from .cold_start import ColdStart
from .echo import EchoServer, TlsEchoServer
from .images import FunctionImage, project_image
from .labels import new_run_id, run_labels, sweep
from .network import BenchNetwork
from .pool_manager import PoolManager
from .service import ContainerError, ServiceContainer

__all__ = [
    "BenchNetwork",
    "ColdStart",
    "ContainerError",
    "EchoServer",
    "FunctionImage",
    "PgBouncer",
    "PoolManager",
    "Postgres",
    "ServiceContainer",
    "SynAckDelay",
    "TlsEchoServer",
    "new_run_id",
    "project_image",
    "run_labels",
    "sweep",
]
