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


def main() -> None:
    propagation = json.loads((RESULTS / "propagation.json").read_text())
    fanout = json.loads((RESULTS / "fanout.json").read_text())
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)

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
    for series, label in (("gateway", "gateway"), ("baseline", "minimal broadcaster")):
        p50 = [r[series]["last_delivery"]["p50_ms"] for r in fanout["results"]]
        p99 = [r[series]["last_delivery"]["p99_ms"] for r in fanout["results"]]
        right.plot(counts, p50, marker="o", label=f"{label} p50")
        right.plot(counts, p99, marker="x", linestyle="--", label=f"{label} p99")
    right.set_xlabel("concurrent SSE subscribers")
    right.set_ylabel("ms to the last subscriber")
    right.set_title(f"Fan-out: write -> last subscriber ({fanout['writes']} writes)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)

    figure.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    figure.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
