"""Kernels as inputs: per-sample ``kernel_conv`` against the same static layer, per backend, and kornia.

A 16 x 128 x 128 x 3 batch, 7x7 kernels, valid padding, float32, CPU. Ratios are time over the
static layer's time (per-sample target: at most 1.1x; torch: no slower than kornia's
``filter2d`` with a batch of kernels), for the default ``method="auto"`` and for
``method="taps"``, the sum over the taps that ONNX and TFLite take (torch's exporters get it
from ``auto``; Keras users pass it to convert with TFLite or tf2onnx). Per-pixel kernels: peak memory of the tap-sum against an
unfold-based formulation (``F.unfold`` then a weighted sum; target at most 1.2x), measured as the
running sum of the torch profiler's allocations and frees, each formulation in its own process.
Run: ``.venv/bin/python benchmarks/bench_dynamic.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from timing import race  # noqa: E402  (benchmarks/timing.py, beside this script)

B, H, W, C, K = 16, 128, 128, 3, 7


def tensorflow() -> None:
    import keras
    import tensorflow as tf

    import registry.keras as rk

    rng = np.random.default_rng(0)
    x, k = rng.random((B, H, W, C), np.float32), rng.random((B, K, K), np.float32)
    static = keras.layers.DepthwiseConv2D(K, use_bias=False)
    static.build((None, H, W, C))
    dynamic = rk.kernel_conv()
    xt, kt = tf.constant(x), tf.constant(k)
    taps = rk.kernel_conv(method="taps")
    s, d, t, m = race(
        static=tf.function(lambda: static(xt)),
        auto=tf.function(lambda: dynamic([xt, kt])),
        taps=tf.function(lambda: taps([xt, kt])),
        map_fn=tf.function(lambda: tf.map_fn(
            lambda a: tf.nn.depthwise_conv2d(a[0][None], tf.tile(a[1][:, :, None, None], (1, 1, C, 1)), [1] * 4,
                                             "VALID")[0],
            (xt, kt), fn_output_signature=tf.float32)),
    )
    print(f"tensorflow  static {s * 1e3:7.2f} ms  kernel_conv {d / s:5.2f}x  tf.map_fn {m / s:5.2f}x  "
          f"method='taps' {t / s:5.2f}x")


def torch_() -> None:
    import torch
    import torch.nn.functional as F

    import registry.torch as rt

    torch.manual_seed(0)
    x, k = torch.rand(B, C, H, W), torch.rand(B, K, K)
    weight = torch.rand(C, 1, K, K)
    m, taps = rt.kernel_conv(), rt.kernel_conv(method="taps")
    try:
        import kornia
    except ImportError:
        kornia = None
    with torch.no_grad():
        fns = {"static": lambda: F.conv2d(x, weight, groups=C), "auto": lambda: m(x, k), "taps": lambda: taps(x, k)}
        if kornia is not None:
            fns["kornia"] = lambda: kornia.filters.filter2d(x, k, border_type="constant", padding="valid")
        s, d, t, *kk = race(100, **fns)
        line = f"torch       static {s * 1e3:7.2f} ms  kernel_conv {d / s:5.2f}x  method='taps' {t / s:5.2f}x"
        if kk:
            line += f"  kornia.filter2d {kk[0] / s:5.2f}x  kernel_conv / kornia {d / kk[0]:5.2f}x"
        else:
            line += "  (kornia not installed)"
    print(line)


def jax_() -> None:
    import jax
    import jax.numpy as jnp

    import registry.jax as rj

    rng = np.random.default_rng(0)
    x, k = jnp.asarray(rng.random((B, H, W, C), np.float32)), jnp.asarray(rng.random((B, K, K), np.float32))
    w = jnp.asarray(rng.random((K, K, 1, C), np.float32))
    static = jax.jit(lambda a: jax.lax.conv_general_dilated(
        a, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=C))
    dynamic = jax.jit(rj.kernel_conv())
    direct = jax.jit(rj.kernel_conv(method="direct"))
    s, d, g = race(
        static=lambda: static(x).block_until_ready(),
        auto=lambda: dynamic(x, k).block_until_ready(),
        direct=lambda: direct(x, k).block_until_ready(),
    )
    print(f"jax         static {s * 1e3:7.2f} ms  kernel_conv {d / s:5.2f}x  method='direct' {g / s:5.2f}x")


def pixel_peak(which: str) -> None:
    """Peak bytes torch allocates for one per-pixel convolution (forward), printed for the parent."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    import registry.torch as rt

    x, k = torch.rand(B, C, H, W), torch.rand(B, K * K, H - K + 1, W - K + 1)
    m = rt.kernel_conv(kernel_size=K, probe=False)

    def unfold() -> torch.Tensor:
        cols = F.unfold(x, K).reshape(B, C, K * K, H - K + 1, W - K + 1)
        return (cols * k[:, None]).sum(2)

    fn = unfold if which == "unfold" else (lambda: m(x, k))
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    peak, now = 0, 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        now += event.cpu_memory_usage if not event.cpu_children else 0  # leaves: allocations and frees
        peak = max(peak, now)
    print(peak)


def pixel() -> None:
    peaks = {}
    for which in ("unfold", "tapsum"):
        out = subprocess.run([sys.executable, __file__, "--pixel", which], capture_output=True, text=True, check=True)
        peaks[which] = int(out.stdout.split()[-1])
    print(f"per-pixel   allocated: tap-sum {peaks['tapsum'] / 2**20:.1f} MiB, unfold {peaks['unfold'] / 2**20:.1f} MiB, "
          f"ratio {peaks['tapsum'] / peaks['unfold']:.2f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pixel"]:
        pixel_peak(sys.argv[2])
        sys.exit()
    print(f"{B} x {H} x {W} x {C} float32, {K}x{K} kernels, {os.cpu_count()} CPUs")
    for run in (tensorflow, torch_, jax_, pixel):
        try:
            run()
        except ImportError as exc:
            print(f"{run.__name__}: skipped ({exc})")
