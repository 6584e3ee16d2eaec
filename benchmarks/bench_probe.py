"""The probe check at emission: what it adds to emitting a layer or tensor, per adapter, on CPU.

Target (shared/DESIGN.md): under 5 ms per emission. Printed: emission with the check and
without it (best of N, then the median), and the difference, which is the check's cost.
The machine is shared, so the best of N is the figure to compare; the median shows the noise.
Run: ``.venv/bin/python benchmarks/bench_probe.py`` (adapters whose framework is missing are skipped).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import registry  # noqa: E402
from registry.adapters import plan as _adapt  # noqa: E402

TARGET_MS = 5.0
REPEAT = 25


def timings(fn: Callable[[], object]) -> tuple[float, float]:
    """(best, median) seconds of ``fn`` over REPEAT runs after one warm-up."""
    fn()
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def cases() -> list[tuple[str, registry.Kernel, dict]]:
    dw = registry.Kernel(
        {"name": "dw", "version": 1, "layout": "HWIM"},
        registry.load("gabor_bank8").array[:, :, 0, :6].reshape(21, 21, 3, 2).copy(),
    )
    return [
        ("sobel_x 3x3, any channels, reflect101", registry.load("sobel_x"), {"border": "reflect101"}),
        (
            "gaussian5 over RGB, symmetric",
            registry.load("gaussian5"),
            {"in_channels": 3, "border": "symmetric"},
        ),
        (
            "gaussian 31x31 RGB, separable",
            registry.load("gaussian", ksize=31, sigma=5.0),
            {"in_channels": 3, "border": "reflect101", "separable": True},
        ),
        (
            "gaussian 31x31 RGB, full",
            registry.load("gaussian", ksize=31, sigma=5.0),
            {"in_channels": 3, "border": "reflect101"},
        ),
        ("gabor_bank8 21x21x1x8 HWIO", registry.load("gabor_bank8"), {"padding": "same"}),
        ("21x21x3x2 HWIM, stride 2", dw, {"strides": 2, "border": "wrap"}),
    ]


def adapters() -> dict[str, Callable[..., object]]:
    found: dict[str, Callable[..., object]] = {}
    if importlib.util.find_spec("keras") is not None:
        import keras

        import registry.keras as rk

        found[f"keras ({keras.backend.backend()})"] = rk.to_layer
    if importlib.util.find_spec("torch") is not None:
        import registry.torch as rt

        found["torch"] = rt.to_layer
    if importlib.util.find_spec("tensorflow") is not None:
        import registry.tensorflow as rtf

        found["tf.nn tensor"] = lambda k, probe, **o: rtf.to_tensor(
            k, probe=probe, **{key: o[key] for key in ("in_channels", "mode") if key in o}
        )
    return found


def main() -> None:
    print(
        f"probe check cost per emission, best of {REPEAT} (median), {os.cpu_count()} CPUs; "
        f"target < {TARGET_MS} ms"
    )
    worst = 0.0
    for adapter, emit in adapters().items():
        print(f"\n{adapter}")
        for label, kernel, options in cases():
            (on, on_med), (off, off_med) = (
                timings(lambda p=p: emit(kernel, probe=p, **options)) for p in (True, False)
            )
            cost = (on - off) * 1e3
            worst = max(worst, cost)
            print(
                f"  {label:<40} with {on * 1e3:7.2f} ms ({on_med * 1e3:6.2f})   without {off * 1e3:7.2f} ms "
                f"({off_med * 1e3:6.2f})   check {cost:5.2f} ms  {'ok' if cost < TARGET_MS else 'OVER'}"
            )
    kernel, options = (
        registry.load("gaussian", ksize=31, sigma=5.0),
        {"in_channels": 3, "border": "reflect101"},
    )
    plan = _adapt.plan(kernel, **options)
    x = _adapt.probe_input(plan)
    best, _ = timings(lambda: _adapt.reference(kernel, x, border="reflect101"))
    print(f"\nNumPy reference alone (31x31 over RGB, probe {x.shape}): {best * 1e3:.2f} ms")
    print(f"worst check: {worst:.2f} ms (target < {TARGET_MS} ms): {'ok' if worst < TARGET_MS else 'OVER'}")


if __name__ == "__main__":
    main()
