"""The summary every benchmark figure is given as: median, min, max and the number of runs."""

from __future__ import annotations

import statistics


def stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}
