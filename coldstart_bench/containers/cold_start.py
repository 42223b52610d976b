"""One cold start of a function image, as a call: the harness's own runner (measure/runner.py) and
lifecycle events (measure/events.py), the catalogue's function command (measure/function_specs.py).

    with ColdStart(client, network=net.name) as cold_start:
        sample = cold_start(image, mode="direct", target=echo)
        sample = cold_start(image, mode="socket", pool=pool_manager, network="none")
"""

from __future__ import annotations

from typing import Protocol, Self

import docker

from ..catalogue import Scenario
from ..measure.events import LifecycleEvents
from ..measure.function_specs import echo_command
from ..measure.lifecycle import StartStop
from ..measure.runner import ColdStartRunner, FunctionSpec, to_sample
from ..samples import Sample
from .images import FunctionImage, image_tag
from .labels import LABEL_ROLE, LABEL_RUN, new_run_id, run_id_of, run_labels
from .pool_manager import PoolManager

MODES = ("direct", "socket")


class Target(Protocol):
    host: str
    port: int


def target_address(target: Target | str) -> str:
    return target if isinstance(target, str) else f"{target.host}:{target.port}"


class ColdStart(StartStop):
    """Runs one fresh function container per call and returns its Sample (``ok``, ``connect_us``,
    ``lifecycle_ms`` from the engine's create and destroy events, the phases the function reports).

    ``network`` is the default network of the function containers (the one the backends are on);
    ``labels`` the run's (labels.run_labels), so the containers are swept with the run.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        network: str,
        labels: dict[str, str] | None = None,
        payload_size: int = 64,
        timeout: float = 60.0,
    ) -> None:
        self.client = client
        self.network = network
        self.labels = dict(labels) if labels is not None else run_labels(new_run_id())
        self.payload_size = payload_size
        self.timeout = timeout
        self.count = 0
        self._events: LifecycleEvents | None = None
        self._runner: ColdStartRunner | None = None

    def start(self) -> Self:
        if self._events is None:
            self._events = LifecycleEvents(self.client, f"{LABEL_RUN}={run_id_of(self.labels)}").start()
            self._runner = ColdStartRunner(self.client, self._events, self.timeout)
        return self

    def stop(self) -> None:
        if self._events is not None:
            self._events.stop()
            self._events = None
            self._runner = None

    def spec(
        self,
        image: str | FunctionImage,
        mode: str = "direct",
        *,
        target: Target | str | None = None,
        pool: PoolManager | None = None,
        network: str | None = None,
        runtime: str = "",
        extra_args: tuple[str, ...] = (),
    ) -> FunctionSpec:
        """The function container one call runs (see __call__)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        network = network or self.network
        if mode == "direct":
            if target is None:
                raise ValueError("a direct cold start needs target= (an echo server, or 'host:port')")
            if network == "none":
                raise ValueError("a direct cold start connects over the network: network='none' cannot work")
        if mode == "socket" and pool is None:
            raise ValueError("a socket cold start needs pool= (a started PoolManager)")
        address = target_address(target) if target is not None else pool.target_of() if pool is not None else ""
        command = echo_command(
            Scenario(f"cold-start-{mode}", mode, network="none" if network == "none" else "bridge"),
            target=address,
            socket=pool.socket_path if pool is not None else "",
            pool=pool.pool if pool is not None else "",
            payload_size=self.payload_size,
        )
        return FunctionSpec(
            image=image_tag(image),
            command=[*command, *extra_args],
            network=network,
            binds=pool.function_binds() if pool is not None else {},
            labels={**self.labels, LABEL_ROLE: "function"},
            runtime=runtime,
        )

    def __call__(
        self,
        image: str | FunctionImage,
        mode: str = "direct",
        *,
        target: Target | str | None = None,
        pool: PoolManager | None = None,
        network: str | None = None,
        runtime: str = "",
        extra_args: tuple[str, ...] = (),
    ) -> Sample:
        """One cold start: ``mode="direct"`` connects to ``target`` itself; ``mode="socket"`` gets
        its connection from ``pool`` (then ``network="none"`` works too)."""
        spec = self.spec(image, mode, target=target, pool=pool, network=network, runtime=runtime, extra_args=extra_args)
        if self._runner is None:
            self.start()
        assert self._runner is not None
        result = self._runner.run(spec)
        self.count += 1
        return to_sample(
            result,
            scenario=f"cold-start-{mode}",
            iteration=self.count - 1,
            delay_ms=0.0,
            network="none" if spec.network == "none" else "bridge",
            oci_runtime=spec.runtime,
        )
