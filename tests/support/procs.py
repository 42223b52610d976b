"""The host-process helpers live in the package (bench/ uses them too): coldstart_bench/measure/host_processes.py."""

from coldstart_bench.measure.host_processes import (  # noqa: F401
    REPO,
    Echo,
    Manager,
    cpu_seconds,
    env,
    read_json_line,
    stop,
)
