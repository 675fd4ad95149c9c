"""Freezing a server process with SIGSTOP, and knowing when it has taken effect."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.eventually import eventually


def freeze(pid: int) -> None:
    """SIGSTOP, then wait until every thread is stopped: the kernel delivers the signal
    asynchronously, and a thread still running could answer one more request."""
    os.kill(pid, signal.SIGSTOP)
    eventually(lambda: _all_stopped(pid), 5.0, f"process {pid} to stop", 0.01)


def _all_stopped(pid: int) -> bool:
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            state = stat.read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:  # a thread that just exited
            continue
        if state not in ("T", "t"):
            return False
    return True
