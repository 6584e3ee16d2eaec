"""Kernels as model inputs (``kernel_conv``): every form, border and option against scipy, sample by sample.

The references never go through kreg: ``scipy.ndimage.correlate`` (``convolve`` for the
convolution) on each sample and channel of scikit-image's sample images with that sample's
kernel, and for per-pixel kernels each tap's shifted image taken by scipy with a one-hot
kernel, weighted pixel by pixel. Keras on TensorFlow and native PyTorch run in this process;
JAX, Keras on JAX and Keras on PyTorch each run this same file in a child process (once JAX
has computed, its threads make the fork-based tests of the parent liable to deadlock).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ndimage = pytest.importorskip("scipy.ndimage")
skimage_data = pytest.importorskip("skimage.data")

import registry  # noqa: E402
from registry import InvalidKernelError  # noqa: E402

CHILD = os.environ.get("KREG_DYNAMIC_CHILD")
FRAMEWORKS = ["jax"] if CHILD == "jax" else ["keras"] if CHILD else ["keras", "torch"]
ROOT = Path(registry.__file__).parents[1]
#: Kernel sizes tried in each case; one (even, the harder anchor) in the slower child processes.
SIZES = ((5, 4),) if CHILD else ((5, 4), (3, 3))
#: kreg border -> (scipy.ndimage mode, cval).
SCIPY = {
    "zero": ("constant", 0.0),
    "constant(0.25)": ("constant", 0.25),
    "reflect101": ("mirror", 0.0),
    "symmetric": ("reflect", 0.0),
    "replicate": ("nearest", 0.0),
    "wrap": ("grid-wrap", 0.0),
}
# Three real images, small crops: a batch whose samples differ.
IMAGES = (
    np.stack(
        [
            skimage_data.astronaut()[60:78, 200:219],
            skimage_data.coffee()[100:118, 300:319],
            skimage_data.chelsea()[50:68, 120:139],
        ]
    ).astype(np.float64)
    / 255.0
)


def kernels(form: str, size: tuple[int, int], out: tuple[int, int] = (18, 19), seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = {"plane": (3, *size), "full": (3, *size, 3, 2), "pixel": (3, *out, size[0] * size[1])}[form]
    return rng.uniform(-1, 1, shape) / (size[0] * size[1])


# -- the references: scipy only -------------------------------------------------------------


def _dilate(k: np.ndarray, d: tuple[int, int]) -> np.ndarray:
    out = np.zeros(((k.shape[0] - 1) * d[0] + 1, (k.shape[1] - 1) * d[1] + 1))
    out[:: d[0], :: d[1]] = k
    return out


def _plane(image: np.ndarray, k: np.ndarray, opts: dict[str, Any]) -> np.ndarray:
    """One HW image through one HW kernel with scipy, then cropped / strided as the options say."""
    d = opts.get("dilation_rate", (1, 1))
    d = (d, d) if isinstance(d, int) else d
    s = opts.get("strides", 1)
    s = (s, s) if isinstance(s, int) else s
    k = _dilate(k, d)
    span = k.shape
    if "border" in opts:
        mode, cval = SCIPY[opts["border"]]
        op = ndimage.convolve if opts.get("operation") == "convolution" else ndimage.correlate
        return op(image, k, mode=mode, cval=cval)[:: s[0], :: s[1]]
    if opts.get("padding") == "same":  # Keras' anchor: the extra pixel after
        widths = []
        for n, kk, st in zip(image.shape, span, s):
            total = max((-(-n // st) - 1) * st + kk - n, 0)
            widths.append((total // 2, total - total // 2))
        image = np.pad(image, widths)
    full = ndimage.correlate(image, k, mode="constant")
    top, left = span[0] // 2, span[1] // 2
    return full[
        top : top + image.shape[0] - span[0] + 1 : s[0], left : left + image.shape[1] - span[1] + 1 : s[1]
    ]


def expected(form: str, x: np.ndarray, k: np.ndarray, opts: dict[str, Any]) -> np.ndarray:
    """What kernel_conv must give (NHWC), sample by sample, channel by channel."""
    samples = []
    if form == "plane" and opts.get("normalize"):
        k = np.exp(k - k.max((1, 2), keepdims=True)) if opts["normalize"] == "softmax" else k
        k = k / k.sum((1, 2), keepdims=True)
    for b in range(x.shape[0]):
        if form == "plane":
            samples.append(np.stack([_plane(x[b, :, :, c], k[b], opts) for c in range(x.shape[3])], -1))
        elif form == "full":
            samples.append(
                np.stack(
                    [
                        sum(_plane(x[b, :, :, i], k[b, :, :, i, o], opts) for i in range(k.shape[3]))
                        for o in range(k.shape[4])
                    ],
                    -1,
                )
            )
        else:
            samples.append(_pixelwise(x[b], k[b], opts))
    return np.stack(samples)


def _pixelwise(image: np.ndarray, k: np.ndarray, opts: dict[str, Any]) -> np.ndarray:
    """Per-pixel kernels: each tap's shifted image (scipy, a one-hot kernel), weighted pixel by pixel."""
    size = opts.get("kernel_size") or (int(np.sqrt(k.shape[-1])),) * 2
    k = k.astype(np.float64)
    if opts.get("normalize") == "softmax":
        k = np.exp(k - k.max(-1, keepdims=True))
    if opts.get("normalize"):
        k = k / k.sum(-1, keepdims=True)
    out = 0.0
    for t in range(size[0] * size[1]):
        onehot = np.zeros(size)
        onehot[divmod(t, size[1])] = 1.0
        shifted = np.stack([_plane(image[:, :, c], onehot, opts) for c in range(image.shape[2])], -1)
        out = out + shifted * k[:, :, t : t + 1]
    return out


# -- running a framework --------------------------------------------------------------------


def run(
    framework: str, opts: dict[str, Any], x: np.ndarray, k: np.ndarray, dtype: str = "float32"
) -> np.ndarray:
    """kernel_conv of ``framework`` on NHWC ``x`` and NHWC-side ``k``; NHWC NumPy out."""
    if framework == "keras":
        import keras

        import registry.keras as rk

        layer = rk.kernel_conv(dtype=dtype, **opts)
        return keras.ops.convert_to_numpy(layer([x.astype(dtype), k.astype(dtype)])).astype(np.float64)
    if framework == "torch":
        import torch

        import registry.torch as rt

        kt = k.transpose(0, 3, 1, 2) if k.ndim == 4 else k
        y = rt.kernel_conv(dtype=dtype, **opts)(
            torch.tensor(x.transpose(0, 3, 1, 2)), torch.tensor(kt.copy())
        )
        return y.detach().double().numpy().transpose(0, 2, 3, 1)
    import jax

    import registry.jax as rj

    return np.asarray(jax.jit(rj.kernel_conv(dtype=dtype, **opts))(x, k), np.float64)


def assert_close(got: np.ndarray, want: np.ndarray, what: str, tol: float = 1e-5) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    error = float(np.abs(got - want).max())
    assert error <= tol * max(1.0, float(np.abs(want).max())), f"{what}: max |difference| {error:.3g}"


CASES: list[tuple[str, dict[str, Any]]] = [
    *((form, {"border": border}) for form in ("plane", "full") for border in SCIPY),
    ("plane", {}),
    ("full", {"padding": "same", "strides": 2}),
    ("plane", {"padding": "same"}),
    ("plane", {"border": "reflect101", "dilation_rate": 2}),
    ("full", {"border": "symmetric", "strides": (2, 3)}),
    ("plane", {"border": "wrap", "strides": 2}),
    ("full", {"dilation_rate": (2, 1)}),
    ("plane", {"border": "replicate", "operation": "convolution"}),
    ("full", {"border": "reflect101", "operation": "convolution"}),
    ("plane", {"border": "wrap", "normalize": "softmax"}),
]


@pytest.mark.parametrize("method", ["direct", "taps"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("form", "opts"), CASES, ids=[f"{f}-{o}" for f, o in CASES])
def test_against_scipy_sample_by_sample(framework: str, form: str, opts: dict[str, Any], method: str) -> None:
    """Both ways of computing planes and full kernels (``auto`` picks one of them per framework)."""
    for size in SIZES if "operation" not in opts else ((5, 3),):  # even sizes: OpenCV's anchor
        k = kernels(form, size)
        assert_close(
            run(framework, {**opts, "method": method}, IMAGES, k),
            expected(form, IMAGES, k, opts),
            f"{framework} {form} {opts} {size} {method}",
        )


PIXEL_CASES: list[dict[str, Any]] = [
    *({"border": border} for border in SCIPY),
    {},
    {"padding": "same"},
    {"padding": "same", "strides": (2, 3)},
    {"border": "reflect101", "normalize": "softmax"},
    {"border": "wrap", "normalize": "sum"},
    {"border": "symmetric", "strides": 2},
    {"border": "replicate", "dilation_rate": (2, 1)},
    {"border": "reflect101", "operation": "convolution"},
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("opts", PIXEL_CASES, ids=[str(o) for o in PIXEL_CASES])
def test_per_pixel_kernels_against_scipy_pixel_by_pixel(framework: str, opts: dict[str, Any]) -> None:
    x = IMAGES[:, :10, :11]  # pixel by pixel: a small image
    for size in SIZES if "operation" not in opts else ((5, 3),):
        out = expected("plane", x[..., :1], kernels("plane", size), opts).shape[1:3]
        k = kernels("pixel", size, out)
        if opts.get("normalize") == "sum":  # sums far from zero: the division stays well conditioned
            k = np.abs(k) + 0.1
        options = {**opts, "kernel_size": size}
        assert_close(
            run(framework, options, x, k), expected("pixel", x, k, options), f"{framework} {opts} {size}"
        )


def test_the_convolution_flips_the_kernel() -> None:
    """The reference's own premise: convolve is correlate with the kernel flipped (odd sizes)."""
    k = kernels("plane", (5, 3))[0]
    got = ndimage.convolve(IMAGES[0, :, :, 0], k, mode="mirror")
    assert np.allclose(got, ndimage.correlate(IMAGES[0, :, :, 0], k[::-1, ::-1], mode="mirror"))


# -- wrong inputs: kreg's errors naming what was received and what was expected -------------

WRONG: list[tuple[dict[str, Any], tuple[int, ...], tuple[int, ...], str, str]] = [
    (
        {},
        (3, 18, 19, 3),
        (3, 5),
        "float32",
        r"kernels \(B, kh, kw\) or .*Received: kernels of shape \(3, 5\)",
    ),
    ({}, (18, 19, 3), (3, 5, 5), "float32", r"takes images .*Received: images of shape \(18, 19, 3\)"),
    (
        {"form": "plane"},
        (3, 18, 19, 3),
        (3, 5, 5, 3, 1),
        "float32",
        r"kernels \(B, kh, kw\)\. Received: kernels of shape \(3, 5, 5, 3, 1\)",
    ),
    (
        {"kernel_size": 3},
        (3, 18, 19, 3),
        (3, 5, 5),
        "float32",
        r"kernel_size=\(3, 3\)\. Received: kernels of shape \(3, 5, 5\)",
    ),
    (
        {},
        (3, 18, 19, 3),
        (2, 5, 5),
        "float32",
        r"expected kernels of shape \(3, \.\.\.\)\. Received: kernels batch 2, images batch 3",
    ),
    ({}, (3, 18, 19, 3), (3, 5, 5), "int32", r"floating-point kernels\. Received: kernels of dtype int32"),
    ({}, (3, 18, 19, 3), (3, 5, 5, 4, 2), "float32", r"take 4 input channels\. Received: images with 3"),
    ({}, (3, 18, 19, 3), (3, 18, 19, 10), "float32", r"cannot split 10 taps"),
    ({}, (3, 18, 19, 3), (3, 18, 19, 9), "float32", r"expected a 16x17 map"),
    ({"border": "wrap"}, (3, 18, 19, 3), (3, 16, 17, 9), "float32", r"expected a 18x19 map"),
    ({}, (3, 4, 19, 3), (3, 5, 5), "float32", r"span 5x5 .*Received: images of shape"),
    ({"method": "taps", "dilation_rate": 2}, (3, 18, 4, 3), (3, 5, 3, 3, 2), "float32", r"span 9x5 "),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("opts", "xs", "ks", "dtype", "message"), WRONG)
def test_wrong_inputs_get_kregs_error(
    framework: str, opts: dict, xs: tuple, ks: tuple, dtype: str, message: str
) -> None:
    x = np.zeros(xs, np.float32)
    k = np.zeros(ks, dtype)
    if framework == "torch":
        x = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
        k = k.transpose(0, 3, 1, 2) if k.ndim == 4 else k
    with pytest.raises(InvalidKernelError, match=message) as info:
        _call_raw(framework, opts, x, k)
    assert "Received" in str(info.value) and "\n" not in str(info.value)


def _call_raw(framework: str, opts: dict[str, Any], x: np.ndarray, k: np.ndarray) -> Any:
    if framework == "keras":
        import registry.keras as rk

        return rk.kernel_conv(**opts)([x, k])
    if framework == "torch":
        import torch

        import registry.torch as rt

        return rt.kernel_conv(**opts)(torch.tensor(x), torch.tensor(k))
    import registry.jax as rj

    return rj.kernel_conv(**opts)(x, k)


def test_bad_options_are_refused_by_name() -> None:
    from registry.adapters.dynamic import dynamic_plan

    for opts, word in [
        ({"padding": "full"}, "padding"),
        ({"border": "mirror"}, "border"),
        ({"normalize": "l2"}, "normalize"),
        ({"operation": "xcorr"}, "operation"),
        ({"form": "full", "normalize": "sum"}, "normalize"),
        ({"strides": 0}, "strides"),
        ({"padding": "same", "border": "wrap"}, "not both"),
    ]:
        with pytest.raises(InvalidKernelError, match=word):
            dynamic_plan(**opts)


# -- gradients against finite differences (float64, both inputs) ----------------------------


def _grads(
    framework: str, opts: dict[str, Any], x: np.ndarray, k: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """d/dx and d/dk of sum(w * kernel_conv(x, k)), by the framework's autodiff."""
    if framework == "keras":
        import keras

        import registry.keras as rk

        layer = rk.kernel_conv(dtype="float64", **opts)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            xt, kt = tf.Variable(x), tf.Variable(k)
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer([xt, kt]) * w)
            gx, gk = tape.gradient(loss, [xt, kt])
            return gx.numpy(), gk.numpy()
        if keras.backend.backend() == "jax":
            import jax

            gx, gk = jax.grad(lambda a, b: (layer([a, b]) * w).sum(), argnums=(0, 1))(x, k)
            return np.asarray(gx), np.asarray(gk)
        framework = "keras-torch"
    if framework in ("torch", "keras-torch"):
        import torch

        xt, kt = torch.tensor(x, requires_grad=True), torch.tensor(k, requires_grad=True)
        if framework == "torch":
            import registry.torch as rt

            kk = kt.permute(0, 3, 1, 2) if k.ndim == 4 else kt
            y = rt.kernel_conv(dtype="float64", **opts)(xt.permute(0, 3, 1, 2), kk).permute(0, 2, 3, 1)
        else:
            import registry.keras as rk

            y = rk.kernel_conv(dtype="float64", **opts)([xt, kt])
        (y * torch.tensor(w)).sum().backward()
        return xt.grad.numpy(), kt.grad.numpy()
    import jax

    import registry.jax as rj

    f = rj.kernel_conv(dtype="float64", **opts)
    gx, gk = jax.grad(lambda a, b: (f(a, b) * w).sum(), argnums=(0, 1))(x, k)
    return np.asarray(gx), np.asarray(gk)


def _numeric(f: Any, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[i] += eps
        down[i] -= eps
        g[i] = (f(up) - f(down)) / (2 * eps)
    return g


GRAD_CASES = [
    ("plane", {"border": "reflect101"}),
    ("full", {"border": "symmetric", "strides": 2}),
    ("pixel", {"border": "wrap", "normalize": "softmax"}),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("form", "opts"), GRAD_CASES, ids=[f for f, _ in GRAD_CASES])
def test_gradients_match_finite_differences(framework: str, form: str, opts: dict[str, Any]) -> None:
    x = IMAGES[:2, :5, :6, :2].copy()
    rng = np.random.default_rng(3)
    k = {
        "plane": rng.normal(size=(2, 3, 2)),
        "full": rng.normal(size=(2, 3, 3, 2, 2)),
        "pixel": rng.normal(size=(2, 5, 6, 4)),
    }[form]
    ho, wo = (3, 3) if opts.get("strides") == 2 else (5, 6)
    w = rng.normal(size=(2, ho, wo, 2))
    gx, gk = _grads(framework, opts, x, k, w)

    def loss(a: np.ndarray, b: np.ndarray) -> float:
        return float((expected(form, a, b, opts) * w).sum())

    assert np.allclose(gx, _numeric(lambda a: loss(a, k), x), atol=1e-6), "d/d images"
    assert np.allclose(gk, _numeric(lambda b: loss(x, b), k), atol=1e-6), "d/d kernels"


# -- the other frameworks, each in its own process ------------------------------------------


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("child", ["jax", "keras-jax", "keras-torch"])
def test_in_a_child_process(child: str) -> None:
    if CHILD:
        pytest.skip("this is a child")
    pytest.importorskip(child.split("-")[-1])
    env = {
        **os.environ,
        "KREG_DYNAMIC_CHILD": child,
        "KERAS_BACKEND": child.split("-")[-1] if child.startswith("keras") else "tensorflow",
        "JAX_PLATFORMS": "cpu",
        "JAX_ENABLE_X64": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__, "-k", "not child"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and " passed" in last and "failed" not in last, (
        result.stdout[-4000:] + result.stderr[-2000:]
    )


# -- typed kernel inputs, registry.stack, saving, the probe at build ------------------------


def test_stack_gives_a_batch_of_registered_kernels() -> None:
    gauss = registry.load("gaussian", ksize=3, sigma=0.0)
    batch = registry.stack(["sobel_?", gauss])
    assert batch.shape == (3, 3, 3) and batch.dtype == np.float32
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)  # OpenCV's Sobel dx
    assert np.array_equal(batch[0], sobel_x) and np.array_equal(batch[1], sobel_x.T)
    assert np.allclose(batch[2] * 16, [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    with pytest.raises(
        InvalidKernelError, match=r"one shape.*sobel_x@1 HW \(3, 3\), gaussian5@1 HW \(5, 5\)"
    ):
        registry.stack(["sobel_x", "gaussian5"])
    with pytest.raises(InvalidKernelError, match="Received: int"):
        registry.stack([3])


@pytest.mark.skipif("keras" not in FRAMEWORKS, reason="Keras only")
def test_kernel_input_from_a_ref_feeds_registered_kernels() -> None:
    import keras

    import registry.keras as rk

    images, kernels = keras.Input((None, None, 3)), rk.kernel_input("sobel_x")
    assert tuple(kernels.shape) == (None, 3, 3) and kernels.dtype == "float32"
    model = keras.Model([images, kernels], rk.kernel_conv(border="symmetric")([images, kernels]))
    batch = registry.stack(["sobel_x", "sobel_y", "sobel_x"])
    got = keras.ops.convert_to_numpy(model([IMAGES.astype("f4"), batch]))
    assert_close(got, expected("plane", IMAGES, batch.astype(np.float64), {"border": "symmetric"}), "model")
    assert tuple(rk.kernel_input(shape=(5, 5)).shape) == (None, 5, 5)
    assert tuple(rk.kernel_input(shape=(3, 3, 2, 4)).shape) == (None, 3, 3, 2, 4)
    assert tuple(rk.kernel_input(layout="pixel", kernel_size=3).shape) == (None, None, None, 9)
    with pytest.raises(InvalidKernelError, match=r"Received: shape=None, layout='HWIM'"):
        rk.kernel_input(layout="HWIM")


@pytest.mark.skipif("keras" not in FRAMEWORKS, reason="Keras only")
def test_a_built_layer_refuses_kernels_of_another_size() -> None:
    import registry.keras as rk

    layer = rk.kernel_conv()
    layer([IMAGES.astype("f4"), kernels("plane", (3, 3)).astype("f4")])
    with pytest.raises(
        InvalidKernelError, match=r"built for plane kernels of size \(3, 3\)\. Received: .*\(3, 5, 5\)"
    ):
        layer([IMAGES.astype("f4"), kernels("plane", (5, 5)).astype("f4")])


@pytest.mark.skipif("keras" not in FRAMEWORKS, reason="Keras only")
def test_the_keras_model_reloads_in_a_fresh_process(tmp_path: Path) -> None:
    """Saved with every form, loaded where only ``import registry.keras`` registered the layer."""
    import keras

    import registry.keras as rk

    x = keras.Input((None, None, 3))
    plane, full, pixel = (
        rk.kernel_input(shape=(5, 3)),
        rk.kernel_input(shape=(3, 3, 3, 2)),
        keras.Input((18, 19, 9)),
    )
    y1 = rk.kernel_conv(border="constant(0.25)", operation="convolution")([x, plane])
    y2 = rk.kernel_conv(padding="same", strides=2)([x, full])
    y3 = rk.kernel_conv(border="wrap", normalize="softmax")([x, pixel])
    model = keras.Model([x, plane, full, pixel], [y1, y2, y3])
    inputs = [
        IMAGES.astype("f4"),
        kernels("plane", (5, 3)),
        kernels("full", (3, 3)),
        kernels("pixel", (3, 3)),
    ]
    inputs = [a.astype("f4") for a in inputs]
    before = [keras.ops.convert_to_numpy(t) for t in model(inputs)]
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "in.npz", *inputs)
    code = (
        "import sys, numpy as np, keras, registry.keras\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "d = np.load(sys.argv[2]); ins = [d[f'arr_{i}'] for i in range(4)]\n"
        "np.savez(sys.argv[3], *[keras.ops.convert_to_numpy(t) for t in m(ins)])\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "m.keras"),
            str(tmp_path / "in.npz"),
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = np.load(tmp_path / "out.npz")
    for i, want in enumerate(before):
        assert np.array_equal(after[f"arr_{i}"], want), f"output {i} after reload"
    assert_close(
        before[0].astype(np.float64),
        expected(
            "plane",
            IMAGES,
            inputs[1].astype(np.float64),
            {"border": "constant(0.25)", "operation": "convolution"},
        ),
        "plane before saving",
        1e-4,
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_probe_catches_a_wrong_layer_at_build(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A formulation that flips the kernels (a convolution where a correlation is due) is caught."""
    from registry import ProbeMismatchError
    from registry.adapters import dynamic

    module = {"keras": "keras_dynamic", "torch": "torch_dynamic", "jax": "jax_dynamic"}[framework]
    import importlib

    mod = importlib.import_module(f"registry.adapters.{module}")
    original = mod._prepare

    def flipped(p: Any, form: str, k: Any) -> Any:
        return original(dynamic.dynamic_plan(operation="convolution"), form, k)

    monkeypatch.setattr(mod, "_prepare", flipped)
    with pytest.raises(ProbeMismatchError, match="probe"):
        run(framework, {"border": "wrap"}, IMAGES, kernels("plane", (3, 3)))
    run(framework, {"border": "wrap", "probe": False}, IMAGES, kernels("plane", (3, 3)))  # skipped on request
    monkeypatch.setenv("KREG_PROBE", "0")
    run(framework, {"border": "wrap"}, IMAGES, kernels("plane", (3, 3)))


@pytest.mark.skipif("keras" not in FRAMEWORKS, reason="Keras only")
def test_the_keras_model_exports_as_a_savedmodel_with_a_dynamic_batch_and_size(tmp_path: Path) -> None:
    """SavedModel serves another batch and size than traced, with the default (direct) form, whose
    depthwise weight has B x C channels, known only at run time. TFLite and tf2onnx need
    ``method="taps"`` (tested below)."""
    import keras

    import registry.keras as rk

    if keras.backend.backend() != "tensorflow":
        pytest.skip("SavedModel export needs Keras on TensorFlow")
    tf = pytest.importorskip("tensorflow")
    x, k = keras.Input((None, None, 3)), rk.kernel_input(shape=(5, 5))
    model = keras.Model([x, k], rk.kernel_conv(border="reflect101")([x, k]))
    model.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    other = IMAGES[:, :15, :17].astype("f4")
    kk = kernels("plane", (5, 5)).astype("f4")
    got = served.serve([other, kk]).numpy()
    assert_close(got.astype(np.float64),
                 expected("plane", other.astype(np.float64), kk.astype(np.float64), {"border": "reflect101"}),
                 "SavedModel")


@pytest.mark.skipif("torch" not in FRAMEWORKS, reason="torch only")
def test_torch_export_with_a_dynamic_batch_and_size() -> None:
    import torch

    import registry.torch as rt

    module = rt.kernel_conv(border="reflect101")
    batch, h, w = (torch.export.Dim(n, min=2, max=256) for n in ("batch", "h", "w"))
    x, k = torch.rand(2, 3, 20, 21), torch.rand(2, 5, 5)
    exported = torch.export.export(module, (x, k), dynamic_shapes=({0: batch, 2: h, 3: w}, {0: batch}))
    other = IMAGES[:, :15, :17].astype("f4")  # another batch and size than traced
    kk = kernels("plane", (5, 5)).astype("f4")
    got = (
        exported.module()(torch.tensor(other.transpose(0, 3, 1, 2)), torch.tensor(kk))
        .numpy()
        .transpose(0, 2, 3, 1)
    )
    assert_close(
        got.astype(np.float64),
        expected("plane", other.astype(np.float64), kk.astype(np.float64), {"border": "reflect101"}),
        "torch.export",
    )


# -- ONNX and TFLite: the sum over the taps, whatever the batch and size ----------------------

#: (form, kernels of 5x4, options) exported with a batch and image size other than the served ones.
EXPORT_CASES = [
    ("plane", {"border": "reflect101"}),
    ("plane", {"border": "wrap", "strides": 2}),
    ("full", {"border": "symmetric"}),
    ("full", {"padding": "same"}),
]


def _served(form: str, size: tuple[int, int] = (15, 17)) -> tuple[np.ndarray, np.ndarray]:
    """Another batch (2, not 3) and size (15x17, or 2x3: smaller than the kernel) than the model was
    traced or converted with (18x19)."""
    x = IMAGES[:2, : size[0], : size[1]].astype(np.float32)
    return x, kernels(form, (5, 4))[:2].astype(np.float32)


def _want(form: str, opts: dict[str, Any], size: tuple[int, int] = (15, 17)) -> np.ndarray:
    x, k = _served(form, size)
    return expected(form, x.astype(np.float64), k.astype(np.float64), opts)


@pytest.mark.skipif("torch" not in FRAMEWORKS, reason="torch only")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
@pytest.mark.parametrize(("form", "opts"), EXPORT_CASES, ids=[f"{f}-{o}" for f, o in EXPORT_CASES])
def test_torch_onnx_export_with_a_dynamic_batch_and_size(
    tmp_path: Path, form: str, opts: dict[str, Any], dynamo: bool
) -> None:
    """Default options: ``auto`` sums over the taps while torch.onnx records the module."""
    import warnings

    import torch

    import registry.torch as rt

    ort = pytest.importorskip("onnxruntime")
    module = rt.kernel_conv(**opts)
    x, k = torch.rand(3, 3, 18, 19), torch.from_numpy(kernels(form, (5, 4)).astype(np.float32))
    path = tmp_path / "kernel_conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            batch, h, w = (torch.export.Dim(n, min=2, max=256) for n in ("batch", "h", "w"))
            program = torch.onnx.export(module, (x, k), dynamo=True, input_names=["x", "k"], verbose=False,
                                        dynamic_shapes=({0: batch, 2: h, 3: w}, {0: batch}))
            program.save(str(path))
        else:
            torch.onnx.export(module, (x, k), str(path), dynamo=False, input_names=["x", "k"], output_names=["y"],
                              dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "k": {0: "b"}, "y": {0: "b", 2: "oh", 3: "ow"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in ((15, 17), (2, 3)):
        served_x, served_k = _served(form, size)
        got = session.run(None, {"x": served_x.transpose(0, 3, 1, 2).copy(), "k": served_k})[0]
        assert_close(got.transpose(0, 2, 3, 1).astype(np.float64), _want(form, opts, size), f"onnxruntime {size}")


@pytest.mark.skipif("torch" not in FRAMEWORKS, reason="torch only")
@pytest.mark.parametrize(("form", "opts"), EXPORT_CASES, ids=[f"{f}-{o}" for f, o in EXPORT_CASES])
def test_torch_jit_trace_serves_another_batch_and_size(form: str, opts: dict[str, Any]) -> None:
    """A traced module sums over the taps and gathers its border, whatever the size it was traced at."""
    import warnings

    import torch

    import registry.torch as rt

    x, k = torch.rand(3, 3, 18, 19), torch.from_numpy(kernels(form, (5, 4)).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(rt.kernel_conv(**opts), (x, k))
    for size in ((15, 17), (2, 3)):
        served_x, served_k = _served(form, size)
        got = traced(torch.from_numpy(served_x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(served_k))
        assert_close(got.numpy().transpose(0, 2, 3, 1).astype(np.float64), _want(form, opts, size), f"trace {size}")


@pytest.mark.skipif("torch" not in FRAMEWORKS, reason="torch only")
def test_torch_refuses_to_record_same_padding_with_strides(tmp_path: Path) -> None:
    """Its pads depend on each image's size: a recorded graph would freeze them (wrong shapes, silently)."""
    import torch

    import registry.torch as rt

    module = rt.kernel_conv(padding="same", strides=2)
    x, k = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 3)
    with pytest.raises(InvalidKernelError, match=r"padding='same' and strides.*Received: strides=\(2, 2\)"):
        torch.jit.trace(module, (x, k))
    with pytest.raises(InvalidKernelError, match="border"):
        torch.onnx.export(module, (x, k), str(tmp_path / "m.onnx"), dynamo=False)
    assert module(x, k).shape == (2, 3, 8, 8)  # eagerly it pads each image as its size asks


def _keras_model(form: str, opts: dict[str, Any]) -> Any:
    import keras

    import registry.keras as rk

    x = keras.Input((None, None, 3))
    k = rk.kernel_input(shape=(5, 4) if form == "plane" else (5, 4, 3, 2))
    return keras.Model([x, k], rk.kernel_conv(method="taps", **opts)([x, k]))


def _tensorflow() -> Any:
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("TFLite and tf2onnx convert Keras on TensorFlow")
    return pytest.importorskip("tensorflow")


@pytest.mark.skipif("keras" not in FRAMEWORKS, reason="Keras only")
@pytest.mark.parametrize(("form", "opts"), EXPORT_CASES, ids=[f"{f}-{o}" for f, o in EXPORT_CASES])
def test_tflite_with_a_dynamic_batch_and_size(form: str, opts: dict[str, Any]) -> None:
    """``method="taps"``: TFLite's builtin ops only (no TF Select), resized to another batch and size."""
    tf = _tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(_keras_model(form, opts))
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    (xi, ki), x, k = interpreter.get_input_details(), *_served(form)
    if tuple(xi["shape_signature"]) != (-1, -1, -1, 3):
        xi, ki = ki, xi
    interpreter.resize_tensor_input(xi["index"], x.shape)
    interpreter.resize_tensor_input(ki["index"], k.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(xi["index"], x)
    interpreter.set_tensor(ki["index"], k)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert_close(got.astype(np.float64), _want(form, opts), "TFLite")


@pytest.mark.skipif("keras" not in FRAMEWORKS, reason="Keras only")
@pytest.mark.parametrize(("form", "opts"), EXPORT_CASES, ids=[f"{f}-{o}" for f, o in EXPORT_CASES])
def test_tf2onnx_with_a_dynamic_batch_and_size(form: str, opts: dict[str, Any]) -> None:
    tf = _tensorflow()
    tf2onnx = pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _keras_model(form, opts)
    spec = (
        tf.TensorSpec((None, None, None, 3), tf.float32, name="x"),
        tf.TensorSpec((None, *model.inputs[1].shape[1:]), tf.float32, name="k"),
    )
    proto, _ = tf2onnx.convert.from_function(
        tf.function(lambda x, k: model([x, k]), input_signature=spec), input_signature=spec, opset=17
    )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x, k = _served(form)
    assert_close(session.run(None, {"x": x, "k": k})[0].astype(np.float64), _want(form, opts), "tf2onnx")


@pytest.mark.skipif("keras" not in FRAMEWORKS, reason="Keras only")
@pytest.mark.parametrize("form", ["plane", "full"])
def test_keras_float64_with_unequal_strides(form: str) -> None:
    """TensorFlow's float64 depthwise kernel takes equal strides only: the layer sums the taps instead."""
    opts = {"border": "reflect101", "strides": (2, 3)}
    k = kernels(form, (5, 4))
    got = run("keras", {**opts, "method": "direct"}, IMAGES, k, dtype="float64")
    assert_close(got, expected(form, IMAGES, k, opts), f"float64 {form}", tol=1e-12)
