"""Separable emission: a 31x31 Gaussian as two 1-D convolutions versus the full 2-D one, on CPU.

Target (shared/DESIGN.md): at least 5x faster, same output (allclose 1e-5).
Run: ``.venv/bin/python benchmarks/bench_tf.py``.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import tensorflow as tf  # noqa: E402

import registry  # noqa: E402


def best(fn, repeat: int = 7) -> float:
    fn()  # warm-up: graph tracing, allocation
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    image = (skimage.data.astronaut() / 255.0).astype(np.float32)
    batch = tf.constant(np.stack([image] * 4))  # 4 x 512 x 512 x 3
    kernel = registry.load("gaussian", ksize=31, sigma=5.0)
    print(f"{kernel.ref} on {tuple(batch.shape)} float32, {os.cpu_count()} CPUs, tf {tf.__version__}")
    for border in (None, "reflect101"):
        options = {"border": border} if border else {"padding": "same"}
        full = kernel.to_keras(in_channels=3, **options)
        two = kernel.to_keras(in_channels=3, separable=True, **options)
        full_fn, two_fn = tf.function(full), tf.function(two)
        diff = float(np.abs(full_fn(batch).numpy() - two_fn(batch).numpy()).max())
        if not diff <= 1e-5:  # a fast wrong answer is not a speed-up (NaN fails too)
            raise SystemExit(f"separable and full 2-D outputs differ by {diff:.3g} (border {border}); "
                             "the target is 1e-5")
        t_full, t_two = best(lambda: full_fn(batch).numpy()), best(lambda: two_fn(batch).numpy())
        label = border or "zero (same)"
        print(f"  border {label:<12} full 2-D {t_full * 1e3:8.1f} ms   separable {t_two * 1e3:7.1f} ms   "
              f"speed-up {t_full / t_two:5.1f}x (target >= 5x)   max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
