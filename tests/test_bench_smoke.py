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
    "fanout": ["--subscribers", "20", "--writes", "2", "--workers", "1", "--settle", "0"],
    "reads": ["--projects", "20", "--seconds", "1", "--connections", "4"],
    "propagation": ["--writes", "5"],
    "resume": ["--projects", "20", "--clients", "10", "--missed", "3"],
    "scale": ["--projects", "50"],
    "store_scale": ["--projects", "5,20", "--writes", "3", "--idle", "0.2"],
    "store_writes": ["--writes", "5"],
}
#: The HTTP protocol benchmarks print their figures (no results file), each naming the
#: protocols it compared.
PROTOCOL_RUNS = {
    "protocol_head_parse": ["--mib", "1"],
    "protocol_overhead": ["--requests", "200", "--repeats", "1"],
    "protocol_reads": ["--seconds", "1", "--connections", "4", "--rounds", "1", "--warmup", "0"],
}
#: What each benchmark starts besides gateways on the local store (the tiers' markers).
NEEDS = {
    "fanout": [],
    "reads": [pytest.mark.wrk],
    "propagation": [pytest.mark.etcd, pytest.mark.consul],
    "resume": [pytest.mark.etcd],
    "scale": [pytest.mark.etcd, pytest.mark.consul],
    "store_scale": [pytest.mark.etcd, pytest.mark.consul],
    "store_writes": [pytest.mark.consul],
    "protocol_head_parse": [],
    "protocol_overhead": [],
    "protocol_reads": [pytest.mark.wrk],
}


def run_benchmark(name: str, args: list[str], results: Path) -> str:
    """``python -m bench.<name> ARGS`` from the repository; its output once it exits 0."""
    env = {**os.environ, "BENCH_RESULTS_DIR": str(results), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("name", [pytest.param(name, marks=NEEDS[name]) for name in sorted(RUNS)])
def test_benchmark_runs_and_writes_its_figures(name: str, tmp_path: Path) -> None:
    output = run_benchmark(name, RUNS[name], tmp_path)
    result = json.loads((tmp_path / f"{name}.json").read_text())
    assert result["benchmark"] == name and result["machine"]["cpus"]
    assert "---" in output  # the printed table


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=NEEDS[name]) for name in sorted(PROTOCOL_RUNS)]
)
def test_protocol_benchmark_runs_and_prints_its_figures(name: str, tmp_path: Path) -> None:
    output = run_benchmark(name, PROTOCOL_RUNS[name], tmp_path)
    assert "limited" in output  # the gateway's own protocol was measured
    if name == "protocol_head_parse":
        assert "431 Request Header Fields Too Large" in output  # and refused the head
