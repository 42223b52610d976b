from __future__ import annotations

import os
import socket
import subprocess
import sys

from coldstart_bench.containers.labels import LABEL_HOST, LABEL_PID
from coldstart_bench.containers.labels import owner_alive as _owner_alive


def test_live_owner_is_alive() -> None:
    assert _owner_alive({LABEL_PID: str(os.getpid())})


def test_dead_owner_is_not() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not _owner_alive({LABEL_PID: proc.stdout.strip()})


def test_resources_without_an_owner_are_left_alone() -> None:
    assert _owner_alive({})
    assert _owner_alive({LABEL_PID: "0"})
    assert _owner_alive({LABEL_PID: "garbage"})


def test_a_dead_pid_of_another_host_is_not_ours_to_sweep() -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = proc.stdout.strip()
    assert not _owner_alive({LABEL_PID: dead, LABEL_HOST: socket.gethostname()})
    assert _owner_alive({LABEL_PID: dead, LABEL_HOST: "some-other-harness-host"})
