"""Local helper processes (echo server, pool manager) started by benchmarks and tests."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from typing import Any


def read_json_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The first JSON line a process prints (its readiness line), within `timeout` seconds."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"no JSON line within {timeout}s (got {buf!r})")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"process exited before its ready line (got {buf!r}, rc={proc.poll()})")
            buf += chunk
    finally:
        sel.close()
    record = json.loads(buf.split(b"\n", 1)[0])
    if not isinstance(record, dict):
        raise RuntimeError(f"first line is not a JSON object: {buf[:200]!r}")
    return record
