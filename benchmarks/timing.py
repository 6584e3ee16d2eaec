"""Timing shared by the benchmarks: every contender over the same rounds, in a shuffled order."""

from __future__ import annotations

import random
import time


def race(repeat: int = 25, **fns) -> list[float]:
    """Best time of each function, run in turn round after round, in a new order each round (so
    that a busy moment of the machine slows every contender alike, and none always runs right
    after the same other: on this machine whatever follows the static depthwise ``F.conv2d``
    runs 1.6x slower)."""
    for fn in fns.values():
        fn()
    times = {name: float("inf") for name in fns}
    order = list(fns.items())
    shuffle = random.Random(0).shuffle
    for _ in range(repeat):
        shuffle(order)
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - t0)
    return list(times.values())
