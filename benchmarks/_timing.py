"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

from __future__ import annotations

import statistics
import time

import torch


def timed(fn) -> float:
    """Seconds one call of ``fn()`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds(named: dict, repeats: int) -> dict:
    """Run the callables alternately ``repeats + 1`` times (rotating the order, the first round a
    warm-up) and return each one's median seconds."""
    times = {name: [] for name in named}
    names = list(named)
    for r in range(repeats + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t = timed(named[name])
            if r > 0:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}


@torch.no_grad()
def bare_forward(model, rows: torch.Tensor, total: int) -> None:
    """``total`` forward passes of ``model`` (and the argmax), in batches of ``len(rows)``: the
    baseline a sampling or enumeration engine is compared against."""
    done = 0
    while done < total:
        m = min(rows.shape[0], total - done)
        model(rows[:m]).argmax(1)
        done += m
