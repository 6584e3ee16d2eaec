"""The probe check catches the classic conversion bugs; and what the adapter core decides (mode,
channels, names, bias, separable factors) is checked for every layout, without a framework import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import registry
from registry.adapters import plan as _adapt

skimage_data = pytest.importorskip("skimage.data")
RGB = (skimage_data.astronaut()[:96, :128] / 255.0).astype(np.float32)


# -- planted bugs, Keras ---------------------------------------------------------------------------


def _keras():
    return pytest.importorskip("keras")


def _conv_copy(layer, weights):
    """A copy of a built Conv2D / DepthwiseConv2D with other weights (the planted bug)."""
    clone = layer.__class__.from_config(layer.get_config())
    clone.build((None, None, None, layer.get_weights()[0].shape[2]))
    clone.set_weights(weights)
    return clone


@pytest.mark.parametrize("bug", ["transpose", "flip"])
def test_keras_probe_catches_a_transposed_or_flipped_kernel(bug: str) -> None:
    import registry.keras as rk

    kernel = registry.load("sobel_x")
    options = {"in_channels": 3}
    layer = kernel.to_keras(**options)
    rk.check_layer(kernel, layer, options)  # the good copy passes
    weight = layer.get_weights()[0]
    planted = weight.transpose(1, 0, 2, 3) if bug == "transpose" else weight[::-1, ::-1]
    with pytest.raises(registry.ProbeMismatchError, match="does not compute what sobel_x@1 says"):
        rk.check_layer(kernel, _conv_copy(layer, [planted]), options)


def test_keras_probe_catches_the_anchor_off_by_one() -> None:
    """An even kernel padded Keras' way ('same' puts the extra pixel after) instead of OpenCV's."""
    keras = _keras()
    import registry.keras as rk

    kernel = registry.load("roberts_pos")
    options = {"border": "replicate"}
    good = kernel.to_keras(**options)
    rk.check_layer(kernel, good, options)
    pad, conv = good.layers
    assert pad.padding == ((1, 0), (1, 0))
    shifted = rk.BorderPadding2D(((0, 1), (0, 1)), "replicate")
    with pytest.raises(registry.ProbeMismatchError, match="roberts_pos@1"):
        rk.check_layer(kernel, keras.Sequential([shifted, conv]), options)


def test_keras_probe_catches_wrong_groups_and_channel_order() -> None:
    keras = _keras()
    import registry.keras as rk

    # a plane meant channel by channel, emitted as one convolution mixing the channels
    kernel = registry.load("gaussian5")
    options = {"in_channels": 3}
    mixed = keras.layers.Conv2D(3, 5, use_bias=False)
    mixed.build((None, None, None, 3))
    mixed.set_weights([np.repeat(np.repeat(kernel.array[:, :, None, None], 3, 2), 3, 3)])
    with pytest.raises(registry.ProbeMismatchError, match="gaussian5@1"):
        rk.check_layer(kernel, mixed, options)
    # a depthwise kernel with a multiplier: outputs in m*C+c order instead of c*M+m
    dw = registry.add(
        "t/dw", np.random.default_rng(0).standard_normal((3, 3, 3, 2)).astype("f4"), layout="HWIM"
    )
    layer = dw.to_keras()
    weight = layer.get_weights()[0]
    wrong = weight.transpose(0, 1, 3, 2).reshape(3, 3, 3, 2)  # the classic reshape of a torch weight
    with pytest.raises(registry.ProbeMismatchError):
        rk.check_layer(dw, _conv_copy(layer, [wrong]), {})


def test_the_probe_runs_at_emission_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A builder that flips the kernel: to_keras raises; probe=False or KREG_PROBE=0 lets it through."""
    _keras()
    import registry.keras as rk

    real = rk._build

    def flipping(plan, **kw):
        flipped = _adapt.Plan(**{**plan.__dict__, "weight": np.ascontiguousarray(plan.weight[::-1, ::-1])})
        return real(flipped, **kw)

    monkeypatch.setattr(rk, "_build", flipping)
    kernel = registry.load("sobel_x")
    with pytest.raises(registry.ProbeMismatchError, match="Keras layer 'kreg_sobel_x_v1"):
        kernel.to_keras(border="reflect101")
    assert kernel.to_keras(border="reflect101", probe=False) is not None
    monkeypatch.setenv("KREG_PROBE", "0")
    assert kernel.to_keras(border="reflect101") is not None


# -- planted bugs, PyTorch -------------------------------------------------------------------------


@pytest.mark.parametrize("bug", ["transpose", "flip", "anchor", "groups"])
def test_torch_probe_catches_each_classic_bug(bug: str) -> None:
    torch = pytest.importorskip("torch")
    import registry.torch as rt

    kernel = registry.load("sobel_x" if bug != "anchor" else "roberts_pos")
    options = {"in_channels": 3, "border": "symmetric"}
    good = kernel.to_torch(**options)
    rt.check_module(kernel, good, options)
    pad, conv = good.border, good.conv
    copy = torch.nn.Sequential(
        rt.BorderPad2d(pad.padding, pad.mode), torch.nn.Conv2d(3, 3, kernel.shape, groups=3, bias=False)
    )
    weight = conv.weight.detach().clone()
    if bug == "transpose":
        weight = weight.transpose(2, 3)
    elif bug == "flip":
        weight = weight.flip(2, 3)
    elif bug == "anchor":
        copy[0] = rt.BorderPad2d(((0, 1), (0, 1)), pad.mode)
    with torch.no_grad():
        copy[1].weight.copy_(weight)
    if bug == "groups":  # the plane applied to the sum of the channels, three times
        copy[1] = torch.nn.Conv2d(3, 3, kernel.shape, bias=False)
        with torch.no_grad():
            copy[1].weight.copy_(weight.expand(3, 3, *kernel.shape))
    with pytest.raises(registry.ProbeMismatchError, match=f"{kernel.ref}"):
        rt.check_module(kernel, copy, options)


# -- what the core decides -------------------------------------------------------------------------


def test_mode_is_validated_for_every_layout() -> None:
    bank = registry.load("gabor_bank8")
    for mode in ("depthwise", "sum", "mean"):
        with pytest.raises(
            registry.InvalidKernelError, match="mode applies to HW planes; gabor_bank8@1 is HWIO"
        ):
            _adapt.plan(bank, mode=mode)
    with pytest.raises(
        registry.InvalidKernelError, match="mode must be depthwise, sum or mean. Received: mode='max'"
    ):
        _adapt.plan(bank, mode="max")
    dw = registry.add("t/dw", np.ones((3, 3, 2, 1), "f4"), layout="HWIM")
    assert _adapt.plan(dw, mode="depthwise").kind == "depthwise"  # what it is anyway
    with pytest.raises(registry.InvalidKernelError, match="is HWIM"):
        _adapt.plan(dw, mode="sum")
    with pytest.raises(registry.InvalidKernelError, match="in_channels must be a positive int"):
        _adapt.plan(registry.load("sobel_x"), in_channels=0)
    with pytest.raises(registry.InvalidKernelError, match="strides must be a positive int"):
        _adapt.plan(registry.load("sobel_x"), strides=(1, 0))


def test_a_plane_without_in_channels_takes_any_channels_and_matches_opencv() -> None:
    cv2 = pytest.importorskip("cv2")
    _keras()
    layer = registry.load("gaussian5").to_keras(border="reflect101")
    out = np.asarray(layer(RGB[None]))[0]
    np.testing.assert_allclose(out, cv2.GaussianBlur(RGB, (5, 5), 0), atol=1e-5)
    gray = np.asarray(layer(RGB[None, :, :, :1]))[0]  # the same layer object on one channel
    np.testing.assert_allclose(gray[..., 0], out[..., 0], atol=1e-6)


def test_inputs_that_cannot_work_get_kreg_errors() -> None:
    _keras()
    with pytest.raises(
        registry.InvalidKernelError, match="emitted for in_channels=1 and received 3 channels"
    ):
        registry.load("gaussian5").to_keras(in_channels=1, border="wrap")(RGB[None])
    with pytest.raises(registry.InvalidKernelError, match=r"takes a batch of images \(N, H, W, C\)"):
        registry.load("gaussian5").to_keras(border="wrap")(RGB[:, :, 0])
    with pytest.raises(registry.InvalidKernelError, match="1 input channels. Received: in_channels=3"):
        registry.load("gabor_bank8").to_keras(in_channels=3)


def test_the_same_kernel_twice_in_one_model() -> None:
    keras = _keras()
    sobel = registry.load("sobel_x")
    model = keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            sobel.to_keras(padding="same"),
            sobel.to_keras(padding="same"),
            sobel.to_keras(border="wrap"),
            sobel.to_keras(border="wrap"),
        ]
    )
    names = [layer.name for layer in model.layers]
    assert len(set(names)) == 4 and all(n.startswith("kreg_sobel_x_v1") for n in names)
    assert sobel.to_keras(name="edges").name == "edges"  # a chosen name is kept as given


def test_bias_and_separable_are_public() -> None:
    gaussian = registry.load("gaussian5")
    column, row = gaussian.separable
    np.testing.assert_allclose(np.outer(column, row), gaussian.array, atol=1e-7)
    assert registry.load("laplacian4").separable is None and gaussian.bias is None
    with pytest.raises(ValueError):
        column[0] = 1.0  # read-only, like the array
    learned = registry.add("t/b", np.ones((3, 3, 1, 2), "f4"), layout="HWIO", bias=[0.5, -1.0])
    assert learned.bias.tolist() == [0.5, -1.0]
    with pytest.raises(registry.InvalidKernelError, match="has no recorded bias"):
        _adapt.plan(gaussian, use_bias=True)


def test_the_core_and_the_package_import_no_framework() -> None:
    code = (
        "import sys, numpy as np, registry, registry.adapters.plan as a\n"
        "k = registry.load('gaussian5')\n"
        "p = a.plan(k, in_channels=3, border='symmetric', separable=True)\n"
        "a.reference(k, a.probe_input(p), border='symmetric')\n"
        "k.bias, k.separable\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]


def test_the_adapters_import_neither_the_api_nor_the_store() -> None:
    """Adapters convert, they never add; the core imports no framework; the Kernel imports adapters lazily."""
    import ast
    from pathlib import Path

    package = Path(registry.__file__).parent

    def top_level_imports(module: str) -> set[str]:
        tree = ast.parse((package / module).read_text(encoding="utf-8"))
        found = set()
        for node in tree.body:  # module level only: imports inside functions are lazy
            if isinstance(node, ast.ImportFrom):
                found.add("." * node.level + (node.module or ""))
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        return found

    for module in ("keras.py", "keras_fft.py", "torch.py", "torch_fft.py", "jax.py", "tensorflow.py"):
        imports = top_level_imports(module)
        assert not imports & {"._api", ".store", ".format.pack", ".store.writer"}, (module, imports)
    for module in ("adapters/plan.py", "adapters/learned.py", "adapters/files.py"):
        imports = top_level_imports(module)
        assert not imports & {".._api", "..store", "..format.pack", "..store.writer"}, (module, imports)
    for core in ("adapters/plan.py", "adapters/methods.py", "adapters/learned.py"):
        assert not top_level_imports(core) & {"tensorflow", "keras", "torch", "jax"}
    assert not top_level_imports("kernels/kernel.py") & {"..keras", "..tensorflow", "..torch", ".."}


@pytest.mark.parametrize(
    "border", [None, "zero", "constant(0.5)", "reflect101", "symmetric", "replicate", "wrap"]
)
@pytest.mark.parametrize(("strides", "dilation"), [(1, 1), (2, 1), (1, 2), ((2, 3), (3, 2))])
def test_the_probe_reference_is_scipy_correlate(border: str | None, strides, dilation) -> None:
    """The NumPy (FFT) reference the probe compares with, against scipy.ndimage on a sample image."""
    ndimage = pytest.importorskip("scipy.ndimage")
    modes = {
        None: ("constant", 0.0),
        "zero": ("constant", 0.0),
        "constant(0.5)": ("constant", 0.5),
        "reflect101": ("mirror", 0.0),
        "symmetric": ("reflect", 0.0),
        "replicate": ("nearest", 0.0),
        "wrap": ("wrap", 0.0),
    }
    rng = np.random.default_rng(5)
    hwio = registry.Kernel(
        {"name": "k", "version": 1, "layout": "HWIO", "bias": [0.5, -0.25]}, rng.standard_normal((4, 3, 3, 2))
    )
    image = RGB[:20, :23].astype(np.float64)
    sh, sw = _adapt.pair(strides, "s")
    dh, dw = _adapt.pair(dilation, "d")
    dilated = np.zeros(((4 - 1) * dh + 1, (3 - 1) * dw + 1, 3, 2))
    dilated[::dh, ::dw] = hwio.array
    mode, cval = modes[border]
    # scipy centres the (dilated) kernel at size // 2, OpenCV's anchor; 'valid' crops the borders away
    full = np.stack(
        [
            sum(ndimage.correlate(image[..., c], dilated[:, :, c, o], mode=mode, cval=cval) for c in range(3))
            for o in range(2)
        ],
        axis=-1,
    ) + np.array([0.5, -0.25])
    if border is None:
        top, left = dilated.shape[0] // 2, dilated.shape[1] // 2
        full = full[
            top : top + image.shape[0] - dilated.shape[0] + 1,
            left : left + image.shape[1] - dilated.shape[1] + 1,
        ]
    expected = full[::sh, ::sw]
    ours = _adapt.reference(hwio, image[None], border=border, strides=strides, dilation_rate=dilation)[0]
    np.testing.assert_allclose(ours, expected, atol=1e-10)
    plane = registry.Kernel({"name": "p", "version": 1, "layout": "HW"}, hwio.array[:, :, 0, 0].copy())
    summed = _adapt.reference(
        plane, image[None], mode="mean", border=border, strides=strides, dilation_rate=dilation
    )
    each = _adapt.reference(plane, image[None], border=border, strides=strides, dilation_rate=dilation)
    np.testing.assert_allclose(summed[..., 0], each.mean(axis=3), atol=1e-12)


def test_keras_to_tensor_works_with_keras_ops() -> None:
    keras = _keras()
    import registry.keras as rk

    kernel = registry.load("sobel_x")
    weight = rk.to_tensor(kernel, in_channels=3)
    assert tuple(weight.shape) == (3, 3, 3, 1)
    out = keras.ops.convert_to_numpy(keras.ops.depthwise_conv(RGB[None], weight))[0]
    expected = _adapt.reference(kernel, RGB[None])[0]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    summed = rk.to_tensor(kernel, in_channels=3, mode="sum")
    assert tuple(summed.shape) == (3, 3, 3, 1)


def test_a_kernel_span_too_large_to_probe_is_refused_unless_probe_is_off(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    kernel = registry.load("sobel_x")
    with pytest.raises(registry.InvalidKernelError, match="pass probe=False"):
        kernel.to_torch(dilation_rate=5000)
    module = kernel.to_torch(dilation_rate=5000, probe=False)
    assert module.dilation == (5000, 5000)
    (tmp_path / "model.pt").write_bytes(b"not a pickle we would ever load")
    import registry.torch as rt

    with pytest.raises(registry.InvalidKernelError, match=r"never a pickle such as \.pt"):
        rt.from_layer(tmp_path / "model.pt", "conv1.weight")
    assert torch is not None


# -- the probe of a large kernel: bounded, and still catching a wrong layer -------------------------

#: Emits a 511x511 kernel with padding="same" (after a 3x3 one, so that the framework's own
#: start-up is not counted) and prints the seconds and the peak memory (MB) the emission added.
_BIG_PROBE = """
import importlib, json, resource, sys, time
import numpy as np
import registry
adapter = importlib.import_module("registry." + sys.argv[1])
options = json.loads(sys.argv[2])
def kernel(size):
    values = np.random.default_rng(size).standard_normal((size, size)).astype("f4")
    return registry.Kernel({"name": "big", "version": 1, "layout": "HW"}, values)
adapter.to_layer(kernel(3), **options)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started, cpu = time.perf_counter(), time.process_time()
adapter.to_layer(kernel(511), **options)
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "grown_mb": grown}))
"""


@pytest.mark.parametrize(
    ("framework", "options"),
    [
        ("keras", {"padding": "same", "in_channels": 3, "method": "direct"}),
        ("keras", {"border": "reflect101", "method": "direct"}),
        ("torch", {"padding": "same", "in_channels": 3, "method": "direct"}),
        ("jax", {"padding": "same", "in_channels": 3, "method": "direct"}),
        ("keras", {"padding": "same", "in_channels": 1}),
        ("torch", {"border": "reflect101"}),
    ],
)
def test_the_probe_of_a_511x511_kernel_takes_under_a_cpu_second_and_256_mb(framework: str, options) -> None:
    # It took 23-62 s and 5.7 GB (Keras on TensorFlow): the framework convolved a 258x259 probe
    # through 261,121 taps. Measured in a fresh process, by the emission's growth of peak RSS and
    # its CPU time (all threads): the wall clock of a machine shared by several test runs says
    # more about them (it measured 1.2-3.3 s at a load of 20 on 2 CPUs, 0.1-0.7 s at 9).
    pytest.importorskip(framework)
    import json

    result = subprocess.run([sys.executable, "-c", _BIG_PROBE, framework, json.dumps(options)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["grown_mb"] < 256, measured
    assert measured["cpu_seconds"] < 1, measured
    assert measured["seconds"] < 10, measured


@pytest.mark.parametrize("size", [3, 31, 101, 511])
@pytest.mark.parametrize("options", [{"padding": "same", "in_channels": 3}, {"border": "wrap"}, {}])
def test_the_probe_asks_a_bounded_work_of_the_framework(size: int, options) -> None:
    """4 images x output pixels x taps of each stays within MAX_PROBE_WORK (or 2 x 4 x 5 pixels)."""
    values = np.random.default_rng(size).standard_normal((size, size)).astype("f4")
    kernel = registry.Kernel({"name": "big", "version": 1, "layout": "HW"}, values)
    p = _adapt.plan(kernel, **options)
    x = _adapt.probe_input(p)
    taps = size * size * x.shape[3]
    if "padding" in options or "border" in options:
        assert x.shape[0] * x.shape[1] * x.shape[2] * taps <= max(1 << 24, 2 * 20 * taps), x.shape
        assert x.shape[1] != x.shape[2] and min(x.shape[1:3]) >= 4
    expected = _adapt.reference(kernel, x, **{k: v for k, v in options.items() if k != "in_channels"})
    assert expected.shape[0] == x.shape[0]


@pytest.mark.parametrize("bug", ["transpose", "flip", "shift"])
def test_a_shrunken_probe_still_catches_a_wrong_layer_of_a_511x511_kernel(bug: str) -> None:
    torch = pytest.importorskip("torch")
    import registry.torch as rt

    values = np.random.default_rng(2).standard_normal((511, 511)).astype("f4")
    kernel = registry.Kernel({"name": "big", "version": 1, "layout": "HW"}, values)
    options = {"padding": "same", "in_channels": 1}
    good = rt.to_layer(kernel, method="direct", **options)
    rt.check_module(kernel, good, options)
    planted = {"transpose": values.T, "flip": values[::-1, ::-1], "shift": np.roll(values, 1, axis=1)}[bug]
    conv = next(m for m in good.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(np.ascontiguousarray(planted)).reshape(conv.weight.shape))
    with pytest.raises(registry.ProbeMismatchError, match="big@1"):
        rt.check_module(kernel, good, options)
