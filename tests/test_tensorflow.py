"""The TensorFlow / Keras adapter: exact weights, borders, separable emission, save/load, extraction."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")

import registry  # noqa: E402
import registry.tensorflow as rtf  # noqa: E402
from registry import Registry  # noqa: E402

CAMERA = (skimage_data.camera() / 255.0).astype(np.float32)
ASTRONAUT = (skimage_data.astronaut() / 255.0).astype(np.float32)
BUILTINS = [info.name for info in registry.list_kernels(origin="builtin")]


def run(layer, image: np.ndarray) -> np.ndarray:
    """Apply a layer to one HxW or HxWxC image; returns HxWxC."""
    batch = image[None, :, :, None] if image.ndim == 2 else image[None]
    return np.asarray(layer(batch))[0]


# -- the seed article's three cases, done right -------------------------------------------


def test_a_fixed_2x2_roberts_cross_as_a_one_filter_conv2d() -> None:
    kernel = registry.load("roberts_pos")
    layer = kernel.to_keras(mode="sum")
    assert isinstance(layer, keras.layers.Conv2D) and layer.filters == 1
    assert layer.kernel.shape == (2, 2, 1, 1)
    out = run(layer, CAMERA)[:, :, 0]
    expected = CAMERA[:-1, :-1] - CAMERA[1:, 1:]  # f(y, x) - f(y+1, x+1), 'valid'
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_a_2x2_kernel_over_rgb_has_kernel_shape_2_2_3_1_and_one_output() -> None:
    layer = registry.load("roberts_pos").to_keras(in_channels=3, mode="sum")
    assert tuple(layer.kernel.shape) == (2, 2, 3, 1)
    out = run(layer, ASTRONAUT)
    assert out.shape == (511, 511, 1)
    gray_sum = ASTRONAUT.sum(axis=2)
    np.testing.assert_allclose(out[:, :, 0], gray_sum[:-1, :-1] - gray_sum[1:, 1:], atol=1e-5)


def test_the_keras_constant_initializer_trap_that_kreg_removes() -> None:
    """Keras 3: Conv2D(filters=1, Constant(k)) with k (2, 2, 1, 3) on RGB silently broadcasts."""
    k = np.arange(12, dtype=np.float32).reshape(2, 2, 1, 3)
    trap = keras.layers.Conv2D(filters=1, kernel_size=2, kernel_initializer=keras.initializers.Constant(k))
    out = trap(np.ones((1, 8, 8, 3), np.float32))
    assert trap.kernel.numpy().shape == (2, 2, 3, 3)  # declared filters=1 ...
    assert out.shape[-1] == 3  # ... and three output channels, no error
    with pytest.raises(registry.InvalidKernelError, match="Values of rank 4 need an explicit layout"):
        registry.add("trap/k", k)  # kreg makes the layout explicit
    stored = registry.add("trap/k", k, layout="HWIO")
    layer = stored.to_keras()
    assert layer.kernel.shape == (2, 2, 1, 3) and run(layer, CAMERA).shape[-1] == 3


def _patches(image: np.ndarray, label: int, count: int, rng: np.random.Generator):
    ys = rng.integers(0, image.shape[0] - 16, count)
    xs = rng.integers(0, image.shape[1] - 16, count)
    return np.stack([image[y:y + 16, x:x + 16] for y, x in zip(ys, xs)])[..., None], np.full(count, label)


def test_a_learned_kernel_registered_reloaded_gives_identical_outputs(reg: Registry, tmp_path: Path) -> None:
    """A small CNN trained a few steps on patches of scikit-image's sample images (no download)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    coins = (skimage_data.coins() / 255.0).astype(np.float32)
    xa, ya = _patches(CAMERA, 0, 64, rng)
    xb, yb = _patches(coins, 1, 64, rng)
    x, y = np.concatenate([xa, xb]), np.concatenate([ya, yb])
    model = keras.Sequential(
        [keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3, name="conv1"), keras.layers.GlobalAveragePooling2D(),
         keras.layers.Dense(2)], name="tiny_cnn")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = tmp_path / "tiny.keras"
    model.save(path)

    stored = registry.add_from_keras(path, "conv1", name="team/tiny_conv1", registry=reg, tags=["learned"])
    spec = reg.load("team/tiny_conv1").spec
    assert spec.provenance.origin == "learned"
    assert spec.provenance.source.framework == "keras" and spec.provenance.source.layer == "conv1"
    assert spec.provenance.source.model == "tiny_cnn"
    assert spec.provenance.source.framework_version == keras.__version__
    import hashlib

    assert spec.provenance.source.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert spec.layout == "HWIO" and spec.bias is not None and len(spec.bias) == 4
    original = model.get_layer("conv1")
    rebuilt = reg.load(stored.ref).to_keras()
    np.testing.assert_array_equal(rebuilt.kernel.numpy(), original.kernel.numpy())
    np.testing.assert_array_equal(rebuilt.bias.numpy(), original.bias.numpy())
    np.testing.assert_array_equal(np.asarray(rebuilt(x[:8])), np.asarray(original(x[:8])))


def test_add_from_keras_names_the_conv_layers_when_asked_for_a_missing_one(reg: Registry) -> None:
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="c1"),
                              keras.layers.DepthwiseConv2D(3, name="d1")])
    with pytest.raises(registry.InvalidKernelError, match="has no layer 'c9'. Convolution layers: c1, d1"):
        registry.add_from_keras(model, "c9", name="x", registry=reg)
    with pytest.raises(registry.InvalidKernelError, match="has 2 convolution layers; name one"):
        registry.add_from_keras(model, name="x", registry=reg)
    depthwise = registry.add_from_keras(model, "d1", name="team/dw", registry=reg)
    assert depthwise.layout == "HWIM" and depthwise.shape == (3, 3, 2, 1)


def test_oihw_in_pytorch_layout_round_trips(reg: Registry) -> None:
    oihw = np.random.default_rng(1).standard_normal((6, 3, 5, 5)).astype(np.float32)
    kernel = reg.add("torch/conv", oihw, layout="OIHW")
    layer = kernel.to_keras()
    assert tuple(layer.kernel.shape) == (5, 5, 3, 6)
    np.testing.assert_array_equal(reg.load("torch/conv").as_layout("OIHW"), oihw)


# -- fidelity ---------------------------------------------------------------------------


def test_sobel_with_reflect101_border_equals_cv2_sobel_everywhere() -> None:
    out = run(registry.load("sobel_x").to_keras(border="reflect101"), CAMERA)[:, :, 0]
    ref = cv2.Sobel(CAMERA, cv2.CV_32F, 1, 0, ksize=3)
    span = float(ref.max() - ref.min())
    assert np.abs(out - ref).max() <= 1e-5 * span


@pytest.mark.parametrize("name", ["gaussian5", "gaussian_s2"])
def test_gaussian_equals_cv2_gaussianblur_on_rgb(name: str) -> None:
    kernel = registry.load(name)
    out = run(kernel.to_keras(in_channels=3, border="reflect101"), ASTRONAUT)
    ksize = kernel.shape[0]
    ref = cv2.GaussianBlur(ASTRONAUT, (ksize, ksize), 0 if name == "gaussian5" else 2.0)
    assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize(
    ("border", "np_mode", "cv_mode", "value"),
    [("reflect101", "reflect", cv2.BORDER_REFLECT_101, 0.0), ("symmetric", "symmetric", cv2.BORDER_REFLECT, 0.0),
     ("replicate", "edge", cv2.BORDER_REPLICATE, 0.0), ("wrap", "wrap", cv2.BORDER_WRAP, 0.0),
     ("zero", "constant", cv2.BORDER_CONSTANT, 0.0), ("constant(0.25)", "constant", cv2.BORDER_CONSTANT, 0.25)],
)
def test_every_border_mode_equals_numpy_pad_and_opencv(border: str, np_mode: str, cv_mode: int, value: float) -> None:
    mode, fill = rtf.parse_border(border)
    padded = run(rtf.BorderPadding2D(((3, 1), (2, 4)), mode, fill), CAMERA[:40, :50])[:, :, 0]
    kwargs = {"constant_values": value} if np_mode == "constant" else {}
    np.testing.assert_array_equal(padded, np.pad(CAMERA[:40, :50], ((3, 1), (2, 4)), mode=np_mode, **kwargs))
    np.testing.assert_array_equal(padded, cv2.copyMakeBorder(CAMERA[:40, :50], 3, 1, 2, 4, cv_mode, value=value))
    # and through a whole emitted layer, against cv2.filter2D with the same border
    kernel = registry.load("sharpen")
    out = run(kernel.to_keras(border=border), CAMERA)[:, :, 0]
    if cv_mode == cv2.BORDER_WRAP:  # filter2D refuses BORDER_WRAP: pad with copyMakeBorder, then 'valid'
        ref = cv2.filter2D(cv2.copyMakeBorder(CAMERA, 1, 1, 1, 1, cv_mode), -1, kernel.array)[1:-1, 1:-1]
    elif value:
        ref = cv2.filter2D(cv2.copyMakeBorder(CAMERA, 1, 1, 1, 1, cv_mode, value=value), -1, kernel.array)[1:-1, 1:-1]
    else:
        ref = cv2.filter2D(CAMERA, -1, kernel.array, borderType=cv_mode)
    assert np.abs(out - ref).max() <= 1e-5 * float(ref.max() - ref.min())


def test_bare_reflect_is_refused_because_libraries_disagree() -> None:
    with pytest.raises(registry.InvalidKernelError, match="border must be one of zero, constant"):
        registry.load("sobel_x").to_keras(border="reflect")


# -- every built-in through every adapter --------------------------------------------------


def impulse_response(kernel_shape: tuple[int, ...], apply) -> np.ndarray:
    h, w = kernel_shape[:2]
    image = np.zeros((2 * h - 1, 2 * w - 1), np.float32)
    image[h - 1, w - 1] = 1.0
    return apply(image)  # 'valid' correlation of an impulse: the kernel rotated 180 degrees


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_through_every_adapter(name: str) -> None:
    kernel = registry.load(name)
    hwio = kernel.as_layout("HWIO")
    flipped = hwio[::-1, ::-1, 0, :]
    layer = kernel.to_keras(method="direct")  # one convolution holding the kernel
    weights = layer.get_weights()[0]
    assert weights.dtype == np.float32
    assert weights.reshape(hwio.shape).tobytes() == hwio.astype(np.float32).tobytes()  # bit-exact
    np.testing.assert_allclose(impulse_response(kernel.shape, lambda im: run(layer, im)), flipped, atol=1e-6)
    filt = kernel.to_tf()
    response = impulse_response(kernel.shape, lambda im: tf.nn.conv2d(im[None, :, :, None], filt, 1, "VALID")[0].numpy())
    np.testing.assert_allclose(response, flipped, atol=1e-6)
    if kernel.layout == "HW":
        dw = kernel.to_tf_depthwise(1)
        response = impulse_response(
            kernel.shape, lambda im: tf.nn.depthwise_conv2d(im[None, :, :, None], dw, [1, 1, 1, 1], "VALID")[0].numpy())
        np.testing.assert_allclose(response, flipped, atol=1e-6)
        summed = kernel.to_keras(mode="sum", in_channels=3, method="direct")
        assert summed.get_weights()[0].shape == (*kernel.shape, 3, 1)
    if kernel.spec.separable is not None:
        two = kernel.to_keras(separable=True)
        np.testing.assert_allclose(impulse_response(kernel.shape, lambda im: run(two, im)), flipped, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "mixed_float16"])
def test_dtypes_and_policies(dtype: str) -> None:
    layer = registry.load("gaussian5").to_keras(in_channels=3, dtype=dtype, method="direct")
    expected = {"mixed_float16": "float16"}.get(dtype, dtype)
    assert layer.compute_dtype == expected
    if dtype in ("float32", "mixed_float16"):  # float32 variables: bit-exact
        assert layer.get_weights()[0][:, :, 0, 0].tobytes() == registry.load("gaussian5").array.tobytes()


def test_layer_options_are_passed_through() -> None:
    layer = registry.load("sobel_x").to_keras(strides=2, dilation_rate=1, padding="same", trainable=True, name="edges")
    assert (layer.name, layer.trainable, layer.strides, layer.padding) == ("edges", True, (2, 2), "same")
    assert registry.load("sobel_x").to_keras().trainable is False
    first = registry.load("sobel_x").to_keras(data_format="channels_first", border="reflect101")
    assert np.asarray(first(np.ones((1, 1, 9, 7), np.float32))).shape == (1, 1, 9, 7)


def test_bad_options_are_explained() -> None:
    sobel = registry.load("sobel_x")
    with pytest.raises(registry.InvalidKernelError, match="not both"):
        sobel.to_keras(padding="same", border="wrap")
    with pytest.raises(registry.InvalidKernelError, match="no separable factors"):
        registry.load("laplacian4").to_keras(separable=True)
    with pytest.raises(registry.InvalidKernelError, match="mode must be depthwise, sum or mean"):
        sobel.to_keras(mode="max")
    with pytest.raises(registry.InvalidKernelError, match="1 input channels. Received: in_channels=3"):
        registry.load("gabor_bank8").to_keras(in_channels=3)


def test_separable_gaussian_gives_the_same_output() -> None:
    kernel = registry.load("gaussian", ksize=31, sigma=5.0)
    full = run(kernel.to_keras(in_channels=3, border="reflect101"), ASTRONAUT)
    two = run(kernel.to_keras(in_channels=3, border="reflect101", separable=True), ASTRONAUT)
    np.testing.assert_allclose(two, full, atol=1e-5)
    mean = run(kernel.to_keras(in_channels=3, mode="mean", separable=True, padding="same"), ASTRONAUT)
    np.testing.assert_allclose(mean, run(kernel.to_keras(in_channels=3, mode="mean", padding="same"), ASTRONAUT), atol=1e-5)


def test_bank_stacks_kernels_into_one_layer_in_order() -> None:
    bank = registry.bank(["sobel_x", "sobel_y"])
    assert bank.ref == "bank(sobel_x@1, sobel_y@1)"
    out = run(bank.to_keras(border="reflect101"), CAMERA)
    assert out.shape == (512, 512, 2)
    np.testing.assert_allclose(out[:, :, 1], cv2.Sobel(CAMERA, cv2.CV_32F, 0, 1, ksize=3), atol=1e-5)
    assert registry.bank("sobel_?").shape == (3, 3, 1, 2)
    with pytest.raises(registry.InvalidKernelError, match="one height, width and input depth"):
        registry.bank(["sobel_x", "sobel5_x"])


# -- save / load -------------------------------------------------------------------------


def _model() -> keras.Model:
    inputs = keras.Input((64, 64, 3))
    a = registry.bank(["sobel_x", "sobel_y"]).to_keras(padding="same", name="edges")(inputs[..., :1])
    c = registry.load("gaussian", ksize=31, sigma=5.0).to_keras(in_channels=3, padding="same", separable=True,
                                                                name="blur")(inputs)
    d = registry.load("laplacian4").to_keras(in_channels=3, mode="mean", padding="same", name="lap")(inputs)
    return keras.Model(inputs, keras.layers.Concatenate()([a, c, d]), name="plain")


def _bordered_model() -> keras.Model:
    inputs = keras.Input((64, 64, 3))
    out = registry.load("sobel_x").to_keras(in_channels=3, border="reflect101", name="sobel")(inputs)
    return keras.Model(inputs, out, name="bordered")


def _reload_in_fresh_process(path: Path, x_path: Path, y_path: Path, *, hide_kreg: bool, tmp: Path) -> None:
    code = (
        ("import sys; sys.modules['registry'] = None\n" if hide_kreg else "import registry.tensorflow\n")
        + "import numpy as np, keras\n"
        + f"m = keras.models.load_model({str(path)!r})\n"
        + f"np.testing.assert_array_equal(np.asarray(m(np.load({str(x_path)!r}))), np.load({str(y_path)!r}))\n"
        + "print('ok')\n"
    )
    # PYTHONPATH: the kreg under test, not whichever one the interpreter has installed.
    env = {"KREG_DB": str(tmp / "no-such-registry"), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(Path(registry.__file__).parents[1])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


@pytest.mark.parametrize("bordered", [False, True])
def test_models_with_emitted_layers_save_and_reload_in_a_fresh_process(tmp_path: Path, bordered: bool) -> None:
    model = _bordered_model() if bordered else _model()
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x)))
    path = tmp_path / "m.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json")
    assert len(config) < 20_000, "the config must not carry the kernel values"
    assert "0.0011" not in json.dumps(json.loads(config))
    # Plain layers reload with kreg not even importable; border layers need kreg installed
    # (not the registry): they are registered when registry.tensorflow is imported.
    _reload_in_fresh_process(path, tmp_path / "x.npy", tmp_path / "y.npy", hide_kreg=not bordered, tmp=tmp_path)


def test_without_tensorflow_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import registry\n"
        "try:\n    registry.load('sobel_x').to_keras()\n"
        "except registry.MissingDependencyError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "pip install 'kreg[tensorflow]'" in result.stdout


def test_kreg_add_from_keras_on_the_command_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from registry.cli import cli

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv1")], name="m")
    model.save(tmp_path / "m.keras")
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", str(tmp_path / "db"), "add", "team/c1", "--from-keras",
                                 str(tmp_path / "m.keras"), "--layer", "conv1"])
    assert (result.exit_code, result.stdout) == (0, "team/c1@1\n")
    record = Registry(tmp_path / "db").load("team/c1").spec
    assert (record.provenance.origin, record.provenance.source.layer, record.shape) == ("learned", "conv1", (3, 3, 3, 2))
    missing = runner.invoke(cli, ["--db", str(tmp_path / "db"), "add", "x", "--from-keras", str(tmp_path / "m.keras"),
                                  "--layer", "nope"])
    assert missing.exit_code == 2 and "Convolution layers: conv1" in missing.stderr
