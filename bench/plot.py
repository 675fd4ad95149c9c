"""Draws docs/performance.png from bench/results/{propagation,fanout}.json.

python -m bench.plot
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import RESULTS

OUT = Path(__file__).resolve().parents[1] / "docs" / "performance.png"
FANOUT_SERIES = {
    "floor": "bare asyncio floor",
    "baseline": "minimal sse-starlette broadcaster",
    "gateway": "gateway",
}


def main() -> None:
    propagation = json.loads((RESULTS / "propagation.json").read_text())
    fanout = json.loads((RESULTS / "fanout.json").read_text())
    figure, (left, right, cost) = plt.subplots(1, 3, figsize=(16, 4.2), dpi=110)

    stats = ["p50_ms", "p95_ms", "p99_ms"]
    width = 0.2
    for offset, result in enumerate(propagation["results"]):
        for shift, (series, label) in enumerate((("gateway", "gateway"), ("raw", "raw store"))):
            values = [result[series][stat] for stat in stats]
            positions = [i + (offset * 2 + shift - 1.5) * width for i in range(len(stats))]
            bars = left.bar(positions, values, width, label=f"{result['store']}: {label}")
            left.bar_label(bars, fmt="%.1f", fontsize=7)
    left.set_xticks(range(len(stats)), ["p50", "p95", "p99"])
    left.set_ylabel("ms")
    left.set_title(f"Propagation: write on A -> event on C ({propagation['writes']} writes)")
    left.legend(fontsize=8)

    counts = [r["subscribers"] for r in fanout["results"]]
    series = [name for name in FANOUT_SERIES if name in fanout["results"][0]]
    for name in series:
        p50 = [r[name]["last_delivery"]["p50_ms"] for r in fanout["results"]]
        p99 = [r[name]["last_delivery"]["p99_ms"] for r in fanout["results"]]
        line = right.plot(counts, p50, marker="o", label=f"{FANOUT_SERIES[name]} p50")[0]
        right.plot(counts, p99, marker="x", linestyle="--", color=line.get_color(), label="p99")
    right.set_xlabel("concurrent SSE subscribers")
    right.set_ylabel("ms to the last subscriber")
    right.set_title(f"Fan-out: write -> last subscriber ({fanout['writes']} writes)")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)

    width = 0.8 / len(series)
    for shift, name in enumerate(series):
        values = [r[name]["cpu_us_per_frame"] for r in fanout["results"]]
        positions = [i + (shift - (len(series) - 1) / 2) * width for i in range(len(counts))]
        bars = cost.bar(positions, values, width, label=FANOUT_SERIES[name])
        cost.bar_label(bars, fmt="%.1f", fontsize=7)
    cost.set_xticks(range(len(counts)), [f"{count:,}" for count in counts])
    cost.set_xlabel("concurrent SSE subscribers")
    cost.set_ylabel("server CPU µs per delivered frame")
    cost.set_title("Fan-out: server CPU per frame")
    cost.legend(fontsize=8)

    figure.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    figure.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
