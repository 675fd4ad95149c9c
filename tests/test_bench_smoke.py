"""Every benchmark still runs, at a tiny size (timings are printed, never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.process import ROOT

RUNS = {
    "fanout": ["--subscribers", "20", "--writes", "2", "--workers", "2"],
    "reads": ["--projects", "20", "--seconds", "1", "--connections", "4"],
    "propagation": ["--writes", "5"],
    "scale": ["--projects", "50"],
}
#: What each benchmark starts besides gateways on the local store (the tiers' markers).
NEEDS = {
    "fanout": [],
    "reads": [pytest.mark.wrk],
    "propagation": [pytest.mark.etcd, pytest.mark.consul],
    "scale": [pytest.mark.etcd, pytest.mark.consul],
}


@pytest.mark.parametrize("name", [pytest.param(name, marks=NEEDS[name]) for name in sorted(RUNS)])
def test_benchmark_runs_and_writes_its_figures(name: str, tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_RESULTS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *RUNS[name]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["benchmark"] == name and result["machine"]["cpus"]
    assert "---" in done.stdout  # the printed table
