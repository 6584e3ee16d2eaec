"""Every way an emitted layer computes (``method=`` direct, separable, fft, auto) gives scipy's and
OpenCV's numbers, on every backend, every border mode, odd and even image and kernel sizes; and
``auto`` picks what the cost model says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import registry
from registry.adapters import plan as planning

ndimage = pytest.importorskip("scipy.ndimage")
skimage_data = pytest.importorskip("skimage.data")
ROOT = Path(__file__).resolve().parent.parent

#: A 37x50 (odd rows) and a 48x63 (even rows, odd columns) crop of scikit-image's camera, in [0, 1].
CAMERA = (skimage_data.camera() / 255.0).astype(np.float32)
IMAGES = {"37x50": CAMERA[100:137, 200:250], "48x63": CAMERA[300:348, 150:213]}
RGB = (skimage_data.astronaut()[:33, :46] / 255.0).astype(np.float32)
#: kreg's border -> scipy.ndimage's mode (and cval); None is padding="same".
SCIPY = {
    "zero": ("constant", 0.0),
    "constant(0.5)": ("constant", 0.5),
    "reflect101": ("mirror", 0.0),
    "symmetric": ("reflect", 0.0),
    "replicate": ("nearest", 0.0),
    "wrap": ("wrap", 0.0),
}
BORDERS = [*SCIPY, None]
EVEN = registry.Kernel(
    {"name": "even4x6", "version": 1, "layout": "HW"},
    np.random.default_rng(4).standard_normal((4, 6)).astype(np.float32),
)


def kernels() -> dict[str, registry.Kernel]:
    return {
        "gaussian7": registry.load("gaussian", ksize=7, sigma=1.5),
        "sobel_x": registry.load("sobel_x"),
        "even4x6": EVEN,
    }


def expected(kernel: registry.Kernel, image: np.ndarray, border: str | None) -> np.ndarray:
    """scipy.ndimage.correlate of each channel (float64); padding='same' is Keras' zero padding,
    whose anchor for an even size is one pixel earlier than scipy's (and OpenCV's)."""
    values = np.asarray(kernel.array, np.float64)
    image = image if image.ndim == 3 else image[:, :, None]
    if border is None:
        origin = [-1 if k % 2 == 0 else 0 for k in values.shape]
        mode, cval = "constant", 0.0
    else:
        origin, (mode, cval) = 0, SCIPY[border]
    planes = [
        ndimage.correlate(image[:, :, c].astype(np.float64), values, mode=mode, cval=cval, origin=origin)
        for c in range(image.shape[2])
    ]
    return np.stack(planes, axis=-1)


def options(border: str | None) -> dict:
    return {"padding": "same"} if border is None else {"border": border}


def methods(kernel: registry.Kernel) -> list[str]:
    return ["direct", "fft", "auto"] + (["separable"] if kernel.separable is not None else [])


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, (what, got.shape, want.shape)
    error = float(np.abs(got - want).max())
    assert error <= 1e-5 * max(1.0, float(np.abs(want).max())), f"{what}: max |difference| {error:.3g}"


# -- in-process: Keras (TensorFlow backend), torch, JAX -----------------------------------------


def run_keras(kernel: registry.Kernel, image: np.ndarray, method: str, **opts) -> np.ndarray:
    pytest.importorskip("tensorflow")
    import registry.keras as rk

    layer = rk.to_layer(kernel, method=method, **opts)
    return np.asarray(layer(image[None] if image.ndim == 3 else image[None, :, :, None]))[0]


def run_torch(kernel: registry.Kernel, image: np.ndarray, method: str, **opts) -> np.ndarray:
    torch = pytest.importorskip("torch")
    import registry.torch as rt

    module = rt.to_layer(kernel, method=method, **opts)
    x = image.transpose(2, 0, 1)[None] if image.ndim == 3 else image[None, None]
    with torch.no_grad():
        return module(torch.tensor(np.ascontiguousarray(x))).numpy()[0].transpose(1, 2, 0)


#: JAX computes only in a child pytest process: its threads make the fork-based tests of the
#: parent liable to deadlock (see tests/test_adapters_jax.py).
CHILD = "KREG_JAX_CHILD"


def test_the_jax_cases_in_their_own_process() -> None:
    if os.environ.get(CHILD) == "1":
        pytest.skip("this is the child")
    pytest.importorskip("jax")
    env = {**os.environ, CHILD: "1", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__]
    result = subprocess.run([*command, "-k", "jax and not keras_fft"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]


def run_jax(kernel: registry.Kernel, image: np.ndarray, method: str, **opts) -> np.ndarray:
    if os.environ.get(CHILD) != "1":
        pytest.skip("runs in the child process (test_the_jax_cases_in_their_own_process)")
    pytest.importorskip("jax")
    import registry.jax as rj

    layer = rj.to_layer(kernel, method=method, **opts)
    return np.asarray(layer(image[None] if image.ndim == 3 else image[None, :, :, None]))[0]


RUNNERS = {"keras": run_keras, "torch": run_torch, "jax": run_jax}


@pytest.mark.parametrize("backend", list(RUNNERS))
@pytest.mark.parametrize("name", ["gaussian7", "sobel_x", "even4x6"])
@pytest.mark.parametrize("border", BORDERS, ids=[str(b) for b in BORDERS])
def test_every_method_gives_scipys_numbers(backend: str, name: str, border: str | None) -> None:
    kernel = kernels()[name]
    # odd and even sizes, taken in turn by the border modes (each size meets every method)
    size = list(IMAGES)[BORDERS.index(border) % 2]
    want = expected(kernel, IMAGES[size], border)
    for method in methods(kernel):
        got = RUNNERS[backend](kernel, IMAGES[size], method, **options(border))
        assert_close(got, want, f"{backend} {name} {border} {size} method={method}")


@pytest.mark.parametrize("backend", list(RUNNERS))
def test_the_fft_path_on_colour_with_strides_dilation_bias_and_mixed_channels(backend: str) -> None:
    """Strides take every s-th pixel, dilation is written out as zeros, the mean mixes channels,
    an HWIO bank maps channels to outputs: each equal to the direct layer and to scipy."""
    run = RUNNERS[backend]
    gauss = registry.load("gaussian", ksize=5, sigma=1.0)
    strided = run(gauss, RGB, "fft", border="wrap", strides=2)
    assert_close(strided, expected(gauss, RGB, "wrap")[::2, ::2], f"{backend} strides")
    dilated = run(gauss, RGB, "fft", border="symmetric", dilation_rate=2)
    assert_close(
        dilated, run(gauss, RGB, "direct", border="symmetric", dilation_rate=2), f"{backend} dilation"
    )
    mean = run(gauss, RGB, "fft", border="reflect101", in_channels=3, mode="mean")
    assert_close(mean, expected(gauss, RGB, "reflect101").mean(axis=2, keepdims=True), f"{backend} mean")
    bank = registry.load("gabor_bank8")
    grey = IMAGES["37x50"]
    got = run(bank, grey, "fft", border="replicate")
    want = np.stack(
        [
            expected(
                registry.Kernel(
                    {"name": "g", "version": 1, "layout": "HW"}, np.ascontiguousarray(bank.array[:, :, 0, o])
                ),
                grey,
                "replicate",
            )[..., 0]
            for o in range(bank.shape[3])
        ],
        axis=-1,
    )
    assert_close(got, want, f"{backend} HWIO bank")


@pytest.mark.parametrize("backend", list(RUNNERS))
def test_reflect101_is_opencvs_border_on_every_method(backend: str) -> None:
    """The same layer, against cv2.filter2D itself (BORDER_REFLECT_101), on the 48x63 crop."""
    cv2 = pytest.importorskip("cv2")
    image = IMAGES["48x63"]
    for name, kernel in kernels().items():
        values = np.asarray(kernel.array, np.float64)
        want = cv2.filter2D(image.astype(np.float64), -1, values, borderType=cv2.BORDER_REFLECT_101)
        for method in methods(kernel):
            got = RUNNERS[backend](kernel, image, method, border="reflect101")
            assert_close(got, want[:, :, None], f"{backend} {name} {method}")


# -- Keras on the jax and torch backends (one fresh process each) --------------------------------

_KERAS_BACKEND = """
import json, sys
import keras
import numpy as np
import registry, registry.keras as rk
image = np.load(sys.argv[1])
out = {}
for name, border in json.loads(sys.argv[2]):
    kernel = registry.load("gaussian", ksize=7, sigma=1.5) if name == "gaussian7" else registry.load(name)
    options = {"padding": "same"} if border is None else {"border": border}
    for method in ("fft", "direct"):
        layer = rk.to_layer(kernel, method=method, **options)
        out[f"{name}|{border}|{method}"] = np.asarray(layer(image[None])).tolist()
        if keras.backend.backend() == "jax":  # traced by XLA: a rank-one FFT layer sums its taps
            import jax
            out[f"{name}|{border}|{method}|jit"] = np.asarray(jax.jit(layer)(image[None])).tolist()
if keras.backend.backend() == "jax":  # taps when traced; op by op, one convolution (or FFT)
    import jax
    from registry.keras_fft import fuses_taps
    traced = []
    jax.jit(lambda t: traced.append(fuses_taps(t)) or t)(image)
    out["taps"] = [fuses_taps(jax.numpy.asarray(image)), traced[0]]
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_fft_layer_on_the_jax_and_torch_backends(backend: str, tmp_path: Path) -> None:
    pytest.importorskip(backend)
    pytest.importorskip("keras")
    np.save(tmp_path / "rgb.npy", RGB)
    cases = [
        ("gaussian7", "reflect101"),
        ("gaussian7", None),
        ("sobel_x", "symmetric"),
        ("gaussian7", "wrap"),
    ]
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KERAS_BACKEND), str(tmp_path / "rgb.npy"), json.dumps(cases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out.get("taps", [False, True]) == [False, True]  # JAX: eager no, traced yes
    for name, border in cases:
        kernel = kernels()[name]
        for method in ("fft", "direct"):
            for how in ("", "|jit") if backend == "jax" else ("",):
                got = np.asarray(out[f"{name}|{border}|{method}{how}"], np.float32)[0]
                assert_close(got, expected(kernel, RGB, border), f"keras/{backend} {name} {border} {method}{how}")


@pytest.mark.parametrize("border", list(SCIPY))
def test_the_keras_fft_layer_pads_to_its_transform_length_on_any_image_size(border: str) -> None:
    """The FFT layer pads its border and the rounding up to a fast transform length in one copy
    where the border folds once, and falls back where it cannot: a 9x9 kernel on images of 40x41
    (the rounding fits), 5x6 (only the border fits), 4x5 (as many border rows as image rows:
    a mirror skipping the edge folds twice) and 3x2 (the border folds over the image),
    rank-one (held as two factors) and not, each against scipy."""
    pytest.importorskip("tensorflow")
    gauss = registry.load("gaussian", ksize=9, sigma=2.0)
    dense = registry.Kernel(
        {"name": "dense9", "version": 1, "layout": "HW"},
        np.random.default_rng(9).standard_normal((9, 9)).astype(np.float32),
    )
    for h, w in ((40, 41), (5, 6), (4, 5), (3, 2)):
        image = CAMERA[200 : 200 + h, 300 : 300 + w]
        for kernel in (gauss, dense):
            got = run_keras(kernel, image, "fft", border=border)
            assert_close(got, expected(kernel, image, border), f"{kernel.name} {border} {h}x{w}")


def test_the_keras_fft_layer_holds_a_rank_one_kernel_as_its_factors() -> None:
    """A rank-one kernel's spectrum is the product of its factors' 1-D spectra (the 2-D kernel's
    own transform, on every call, cost as much as the image's): the layer holds the factors,
    whose product is the registered kernel; other kernels keep the 2-D weight."""
    pytest.importorskip("tensorflow")
    import registry.keras as rk

    gauss = registry.load("gaussian", ksize=31, sigma=5.0)
    layer = rk.to_layer(gauss, border="reflect101", method="fft")
    assert isinstance(layer, rk.FFTConv2D)  # the border is padded by the layer itself
    assert [v.path.split("/")[-1] for v in layer.weights] == ["column", "row"]
    product = np.asarray(layer.dense_kernel())[:, :, 0, 0]
    np.testing.assert_allclose(product, gauss.array, rtol=1e-6, atol=1e-9)
    assert [v.path.split("/")[-1] for v in rk.to_layer(EVEN, method="fft").weights] == ["kernel"]
    # trainable: the 2-D weight, which training may take anywhere (factors would keep it rank one)
    trained = rk.to_layer(gauss, border="reflect101", method="fft", trainable=True)
    assert [v.path.split("/")[-1] for v in trained.weights] == ["kernel"]
    # a string border on the class itself, as BorderPadding2D takes it
    assert rk.FFTConv2D((3, 3, 1, 1), border="reflect101", pads=((1, 1), (1, 1))).border == ("reflect101", 0.0)


def test_the_keras_fft_layer_of_a_float64_or_loosely_factored_kernel_keeps_its_2d_weight() -> None:
    """Recorded factors reproduce a float32 kernel to its rounding, not a float64 one (6e-9 off,
    the probe allows 1e-9), nor a record whose factors are only near the values: the layer then
    holds the 2-D weight, and builds."""
    pytest.importorskip("tensorflow")
    import registry.keras as rk

    gauss = registry.load("gaussian", ksize=15, sigma=2.5)
    image = IMAGES["37x50"].astype(np.float64)
    for opts in ({}, {"border": "reflect101"}, {"method": "fft"}):
        layer = rk.to_layer(gauss, dtype="float64", **opts)
        assert all(v.path.split("/")[-1] != "column" for v in layer.weights), opts
    layer = rk.to_layer(gauss, dtype="float64", border="reflect101", method="fft")
    got = np.asarray(layer(image[None, :, :, None]))[0]
    want = expected(gauss, image, "reflect101")
    assert float(np.abs(got - want).max()) <= 1e-9
    column, row = (np.asarray(f) for f in gauss.separable)
    near = registry.Kernel(
        {"name": "near", "version": 1, "layout": "HW",
         "separable": {"column": (column + np.eye(15)[0] * 1e-3).tolist(), "row": row.tolist()}},
        np.asarray(gauss.array, np.float32),
    )
    layer = rk.to_layer(near, border="wrap", method="fft")
    assert [v.path.split("/")[-1] for v in layer.weights] == ["kernel"]


@pytest.mark.parametrize("jit", [False, True])
def test_keras_layers_refuse_an_image_smaller_than_the_kernel_by_fft_and_by_taps(jit: bool) -> None:
    """A valid correlation of an image smaller than the kernel: kreg's error naming the span (the
    FFT returned garbage of a negative size's shape; the taps under XLA an empty tensor)."""
    tf = pytest.importorskip("tensorflow")
    import registry.keras as rk

    gauss = registry.load("gaussian", ksize=7, sigma=1.5)
    x = tf.constant(np.ones((1, 5, 5, 1), np.float32))
    for method in ("fft", "direct"):
        layer = rk.to_layer(gauss, method=method)
        if method == "direct" and not jit:
            continue  # Keras' own convolution raises its own error
        with pytest.raises(Exception, match="(?s)at least the kernel's span 7x7"):
            tf.function(lambda images: layer(images), jit_compile=jit, autograph=False)(x)


# -- the plan: the choice and the options ----------------------------------------------------------


def test_auto_picks_fft_for_a_large_kernel_and_a_cheap_pass_for_a_small_one() -> None:
    big = registry.load("gaussian", ksize=31, sigma=5.0)
    for framework in ("tensorflow", "torch", "jax"):
        assert planning.plan(big, border="reflect101", framework=framework).method == "fft"
    assert planning.plan(registry.load("sobel_x"), framework="tensorflow").method in ("direct", "separable")
    assert planning.plan(registry.load("sobel_x"), framework="torch").method in ("direct", "separable")
    # a dilated kernel and 'same' padding with strides never go by FFT unless asked
    assert planning.plan(big, border="wrap", dilation_rate=2, framework="jax").method != "fft"
    assert planning.plan(big, padding="same", strides=2, framework="jax").method != "fft"


def test_fast_size_is_the_least_2_3_5_smooth_length() -> None:
    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 2100):
        got = planning.fast_size(n)
        assert got >= n and smooth(got) and not any(smooth(m) for m in range(n, got)), n


def test_method_and_separable_are_checked_with_kreg_errors() -> None:
    gauss, even = registry.load("gaussian5"), EVEN
    with pytest.raises(
        registry.InvalidKernelError, match="method must be one of auto, direct, separable, fft"
    ):
        planning.plan(gauss, method="winograd")
    with pytest.raises(registry.InvalidKernelError, match="separable=True is method='separable'"):
        planning.plan(gauss, method="fft", separable=True)
    with pytest.raises(registry.InvalidKernelError, match="has no separable factors"):
        planning.plan(even, method="separable")
    with pytest.raises(registry.InvalidKernelError, match="method='fft' with padding='same' takes strides=1"):
        planning.plan(gauss, method="fft", padding="same", strides=2)
    assert planning.plan(gauss, separable=True).method == "separable"  # the old spelling still works
    assert planning.plan(gauss, method="separable").factors is not None


# -- deployment of the FFT layers ------------------------------------------------------------------


def test_the_torch_fft_module_scripts_and_refuses_onnx_with_kregs_error(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import registry.torch as rt

    module = rt.to_layer(registry.load("gaussian", ksize=31, sigma=5.0), border="reflect101", method="fft")
    x = torch.tensor(np.ascontiguousarray(RGB.transpose(2, 0, 1)[None]))
    with torch.no_grad():
        assert torch.equal(torch.jit.script(module)(x), module(x))
    with pytest.raises(registry.InvalidKernelError, match="ONNX has no FFT.*method='direct'"):
        torch.onnx.export(module, (x,), str(tmp_path / "m.onnx"), dynamo=False)


def test_the_keras_fft_layer_survives_a_keras_file_with_open_sizes(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    import registry.keras as rk

    gauss = registry.load("gaussian", ksize=7, sigma=1.5)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, rk.to_layer(gauss, border="symmetric", method="fft")(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    got = np.asarray(loaded(RGB[None]))[0]
    assert_close(got, expected(gauss, RGB, "symmetric"), "loaded .keras")


#: (kernel, options, image) that send a torch plane module down each of its eager paths: the
#: sum over the taps (a plane of 512x512 or more, at most 49 taps) and the depthwise convolution
#: of every plane (smaller planes, or more taps); scripted, it folds the planes into the batch.
TORCH_PLANE_CASES = [
    ("sobel_x", {"border": "reflect101"}, "camera"),
    ("gaussian7", {"padding": "same"}, "camera"),
    ("gaussian7", {"border": "wrap", "strides": (2, 3), "dilation_rate": 2}, "camera"),
    ("even4x6", {"border": "symmetric"}, "camera"),
    ("gaussian7", {"border": "replicate", "strides": 2}, "37x50"),
    ("gabor15", {"border": "reflect101"}, "camera"),
]


@pytest.mark.parametrize(("name", "opts", "image"), TORCH_PLANE_CASES, ids=[f"{n}-{o}-{i}" for n, o, i in TORCH_PLANE_CASES])
def test_torch_plane_modules_eager_and_scripted_give_scipys_numbers(name: str, opts: dict, image: str) -> None:
    torch = pytest.importorskip("torch")
    import registry.torch as rt

    kernel = {**kernels(), "gabor15": registry.load("gabor", ksize=15, sigma=3.0, theta=0.5, lambd=6.0)}[name]
    picture = CAMERA if image == "camera" else IMAGES[image]
    rgb = np.stack([picture, picture[::-1], picture[:, ::-1]], -1)
    module = rt.to_layer(kernel, method="direct", **opts)
    assert any(isinstance(m, rt.PlaneConv2d) for m in module.modules())
    strides = opts.get("strides", 1)
    strides = (strides, strides) if isinstance(strides, int) else strides
    values = np.asarray(kernel.array, np.float64)
    if opts.get("dilation_rate"):
        d = opts["dilation_rate"]
        dilated = np.zeros(((values.shape[0] - 1) * d + 1, (values.shape[1] - 1) * d + 1))
        dilated[::d, ::d] = values
        kernel = registry.Kernel({"name": "dilated", "version": 1, "layout": "HW"}, dilated)
    want = expected(kernel, rgb, opts.get("border"))[:: strides[0], :: strides[1]]
    x = torch.tensor(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))
    scripted = torch.jit.script(module)
    with torch.no_grad():
        for how, run in (("eager", module), ("scripted", scripted)):
            assert_close(run(x).numpy()[0].transpose(1, 2, 0), want, f"{name} {opts} {image} {how}")


@pytest.mark.parametrize("image", ["camera", "37x50"])
def test_a_torch_plane_modules_bias_on_each_eager_path(image: str) -> None:
    torch = pytest.importorskip("torch")
    import registry.torch as rt

    values = np.asarray(kernels()["even4x6"].array, np.float64)
    module = rt.PlaneConv2d(torch.tensor(values[None, None]), torch.tensor([0.25], dtype=torch.float64),
                            stride=(1, 2), padding=0, dilation=(1, 1))
    picture = (CAMERA if image == "camera" else IMAGES[image]).astype(np.float64)
    full = ndimage.correlate(picture, values, mode="constant")
    top, left = values.shape[0] // 2, values.shape[1] // 2  # scipy's centre of an even kernel
    want = full[top : top + picture.shape[0] - 3, left : left + picture.shape[1] - 5 : 2] + 0.25
    with torch.no_grad():
        got = module(torch.tensor(picture[None, None].copy()))[0, 0].numpy()
    assert_close(got, want, f"bias {image}")


@pytest.mark.parametrize("shape", [(1, 1, 3, 300000), (1, 3, 3, 30)], ids=["taps-path", "depthwise-path"])
def test_a_torch_plane_module_refuses_an_image_smaller_than_its_kernel(shape: tuple) -> None:
    torch = pytest.importorskip("torch")
    import registry.torch as rt

    module = rt.to_layer(registry.load("gaussian", ksize=5, sigma=1.0), method="direct")
    with pytest.raises(registry.InvalidKernelError, match=r"span 5x5.*Received: images of shape"):
        module(torch.zeros(shape))


def test_a_torch_plane_module_with_same_padding_and_an_even_kernel_keeps_the_size() -> None:
    """torch's own 'same' puts the odd pixel of an even span after: the taps path pads so too."""
    torch = pytest.importorskip("torch")
    import registry.torch as rt

    values = np.asarray(kernels()["even4x6"].array, np.float64)
    module = rt.PlaneConv2d(torch.tensor(values[None, None]), None, stride=(1, 1), padding="same", dilation=(1, 1))
    picture = CAMERA.astype(np.float64)  # 512x512: the sum over the taps
    widths = [(k - 1) // 2 for k in values.shape]
    padded = np.pad(picture, [(w, k - 1 - w) for w, k in zip(widths, values.shape)])
    full = ndimage.correlate(padded, values, mode="constant")
    top, left = values.shape[0] // 2, values.shape[1] // 2
    want = full[top : top + picture.shape[0], left : left + picture.shape[1]]
    x = torch.tensor(picture[None, None].copy())
    with torch.no_grad():
        for how, run in (("eager", module), ("scripted", torch.jit.script(module))):
            assert_close(run(x)[0, 0].numpy(), want, f"same, even kernel, {how}")


def test_a_torch_plane_module_sums_half_precision_taps_in_float32() -> None:
    """float16 on the taps path: as close to scipy's float64 as the convolution gets (49 partial
    sums rounded to float16 had lost a digit)."""
    torch = pytest.importorskip("torch")
    import registry.torch as rt

    values = np.random.default_rng(7).standard_normal((7, 7))
    module = rt.PlaneConv2d(torch.tensor(values[None, None], dtype=torch.float16), None, stride=(1, 1), padding=0,
                            dilation=(1, 1))
    picture = CAMERA.astype(np.float64) * 100
    full = ndimage.correlate(picture, values, mode="constant")
    want = full[3:-3, 3:-3]
    x = torch.tensor(picture[None, None], dtype=torch.float16)
    with torch.no_grad():
        got = module(x)[0, 0].double().numpy()
    error = float(np.abs(got - want).max())
    assert error <= 1.5e-3 * float(np.abs(want).max()), error


#: (kernel, options, image) for Keras' plane layer compiled by XLA: it sums the taps there.
KERAS_XLA_CASES = [  # (TensorFlow's depthwise convolution takes equal strides only)
    ("sobel_x", {"border": "reflect101"}, "48x63"),
    ("gaussian7", {"border": "wrap", "strides": (2, 2), "dilation_rate": 2}, "48x63"),
    ("even4x6", {"border": "symmetric"}, "37x50"),
    ("even4x6", {"padding": "same", "strides": (3, 3)}, "48x63"),  # pads set by the size
    ("gaussian7", {"padding": "same"}, "RGB"),
    ("sobel_x", {"border": "replicate", "method": "separable"}, "RGB"),
    ("gaussian7", {"border": "symmetric", "method": "fft"}, "48x63"),  # rank one: two passes
    ("gaussian7", {"border": "reflect101", "method": "fft", "strides": (2, 3)}, "RGB"),
    ("gaussian7", {"padding": "same", "method": "fft"}, "37x50"),
    ("even4x6", {"border": "wrap", "method": "fft"}, "37x50"),  # not rank one: the FFT
    ("skew4x3", {"border": "reflect101", "method": "fft"}, "48x63"),  # rank one, no symmetry
]
#: A rank-one kernel symmetric on neither axis: a pass run backwards shows.
SKEW = registry.Kernel(
    {"name": "skew4x3", "version": 1, "layout": "HW",
     "separable": {"column": [1.0, 2.0, 3.0, -4.0], "row": [0.5, -2.0, 1.5]}},
    np.outer([1.0, 2.0, 3.0, -4.0], [0.5, -2.0, 1.5]).astype(np.float32),
)


@pytest.mark.parametrize(("name", "opts", "image"), KERAS_XLA_CASES, ids=[f"{n}-{o}-{i}" for n, o, i in KERAS_XLA_CASES])
def test_keras_plane_layers_compiled_by_xla_sum_their_taps(name: str, opts: dict, image: str) -> None:
    """Under TensorFlow's jit_compile on a CPU, XLA's convolution is slow (a 3x3 depthwise one of
    1024x1024x3: 80 ms) and the sum over the taps fast (3.5 ms): the plane layer compiles no
    convolution there, one without it; the FFT layer of a rank-one kernel sums its two factors'
    taps there (no FFT), any other transforms. Each gives scipy's numbers (for a border) or
    TensorFlow's own depthwise convolution's (for Keras' 'same')."""
    tf = pytest.importorskip("tensorflow")
    import registry.keras as rk

    kernel = {**kernels(), "skew4x3": SKEW}[name]
    picture = RGB if image == "RGB" else IMAGES[image]
    picture = picture if picture.ndim == 3 else picture[:, :, None]
    layer = rk.to_layer(kernel, **opts)
    x = tf.constant(picture[None])
    values = np.asarray(kernel.array, np.float64)
    if "border" in opts:
        sy, sx = opts.get("strides", (1, 1))  # scipy's anchor is kreg's border anchor
        dilated = np.zeros([(k - 1) * opts.get("dilation_rate", 1) + 1 for k in values.shape])
        dilated[:: opts.get("dilation_rate", 1), :: opts.get("dilation_rate", 1)] = values
        probe = registry.Kernel({"name": "d", "version": 1, "layout": "HW"}, dilated)
        want = expected(probe, picture, opts["border"])[::sy, ::sx]
    else:  # Keras' 'same': TensorFlow's own convolution with its zeros (float64)
        weight = np.repeat(values[:, :, None, None], picture.shape[2], axis=2)
        want = tf.nn.depthwise_conv2d(tf.constant(picture[None], tf.float64), weight,
                                      [1, *opts.get("strides", (1, 1)), 1], "SAME").numpy()[0]
    fft = opts.get("method") == "fft"
    for jit in (True, False):
        run = tf.function(lambda images: layer(images), jit_compile=jit, autograph=False)
        kinds = {op.type for op in run.get_concrete_function(x).graph.get_operations()}
        summed = jit and kernel.separable is not None if fft else jit
        computes = {"RFFT2D"} if fft else {"Conv2D", "DepthwiseConv2dNative"}
        assert bool(kinds & computes) != summed, f"jit_compile={jit}: {sorted(kinds)}"
        assert_close(run(x).numpy()[0], want, f"{name} {opts} jit_compile={jit}")


def test_a_keras_plane_layer_checks_its_taps_against_its_convolution_when_xla_first_traces_it(monkeypatch) -> None:
    """The probe checks the convolution when the layer is emitted; the sum over the taps, which
    only XLA takes, is checked against it the first time XLA traces the layer: a wrong sum is
    kreg's ProbeMismatchError then, not wrong numbers."""
    tf = pytest.importorskip("tensorflow")
    import registry.keras as rk

    layer = rk.to_layer(EVEN, border="reflect101")
    plane = layer.layers[1]
    right = type(plane)._taps
    monkeypatch.setattr(type(plane), "_taps", lambda self, x: right(self, x)[:, ::-1])  # rows flipped
    x = tf.constant(IMAGES["37x50"][None, :, :, None])
    with pytest.raises(registry.ProbeMismatchError, match="sums its taps under XLA"):
        tf.function(layer, jit_compile=True, autograph=False)(x)
    # autograph wraps it in its StagingError, whose message carries kreg's
    with pytest.raises(Exception, match="(?s)ProbeMismatchError.*sums its taps under XLA"):
        tf.function(lambda images: layer(images), jit_compile=True)(x)
    monkeypatch.setattr(type(plane), "_taps", right)
    assert_close(tf.function(layer, jit_compile=True)(x).numpy()[0], expected(EVEN, IMAGES["37x50"], "reflect101"), "right")
