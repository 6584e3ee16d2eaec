"""Content pins on object storage: ``load("name@sha256:...")`` on a new machine costs at most three
requests (the root, the name's segment, the values), on S3 and Azure alike."""

from __future__ import annotations

import numpy as np

import registry
from registry.store.object import ObjectBackend


def test_a_cold_pin_load_costs_three_requests(remote_url: str) -> None:
    reg = registry.Registry(remote_url, builtins=False)
    for i in range(5):
        reg.add("team/edge", np.full((3, 3), i, "f4"))
    pin = reg.load("team/edge@3").pin
    cold = registry.Registry(ObjectBackend(remote_url, cache=False), builtins=False)  # a new machine
    kernel = cold.load(pin)
    np.testing.assert_array_equal(kernel.array, np.full((3, 3), 2))
    stats = cold.backend.stats
    assert sum(stats[v] for v in ("get", "put", "delete", "list")) <= 3 and stats["put"] == 0, dict(stats)
