"""The public surface: what `import registry` offers, and what it must not import."""

from __future__ import annotations

import subprocess
import sys

import registry


def test_all_is_sorted_and_equals_the_public_names() -> None:
    assert registry.__all__ == sorted(registry.__all__)
    import types

    public = {
        n for n in dir(registry) if not n.startswith("_") and not isinstance(getattr(registry, n), types.ModuleType)
    } | {"KernelRecord", "Provenance", "__version__"}
    assert set(registry.__all__) == public  # no typing helpers (Any, TYPE_CHECKING) leak into the namespace


def test_public_functions_show_their_real_signatures() -> None:
    import inspect

    for name in registry.__all__:
        obj = getattr(registry, name)
        if inspect.isfunction(obj):
            # Only a family's parameters are open-ended (load("gaussian", sigma=2)); options are spelled out.
            hidden = [p.name for p in inspect.signature(obj).parameters.values()
                      if p.kind == inspect.Parameter.VAR_KEYWORD and p.name != "params"]
            assert not hidden, f"registry.{name} hides its options in **{hidden[0]}"
    # The module-level add takes exactly Registry.add's options.
    wrapper = list(inspect.signature(registry.add).parameters)
    method = list(inspect.signature(registry.Registry.add).parameters)[1:]
    assert wrapper == method


def test_bank_takes_kernel_objects(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KREG_DB", str(tmp_path / "db"))
    import numpy as np

    blur = registry.load("gaussian", ksize=3, sigma=0.0)
    bank = registry.bank(["sobel_x", blur, "sobel_y"])
    assert bank.shape == (3, 3, 1, 3)
    np.testing.assert_array_equal(bank.array[:, :, 0, 1], blur.array)
    np.testing.assert_array_equal(bank.array[:, :, 0, 2], registry.load("sobel_y").array)
    import pytest

    with pytest.raises(registry.InvalidKernelError, match="bank\\(\\) takes refs, glob patterns or Kernel objects"):
        registry.bank([3])


def test_every_exported_name_resolves() -> None:
    for name in registry.__all__:
        assert getattr(registry, name) is not None


def test_errors_also_subclass_the_matching_builtin() -> None:
    assert issubclass(registry.KernelNotFoundError, KeyError)
    assert issubclass(registry.InvalidNameError, ValueError)
    assert issubclass(registry.InvalidKernelError, ValueError)
    assert issubclass(registry.SchemaVersionError, ValueError)
    assert issubclass(registry.IntegrityError, ValueError)
    assert issubclass(registry.UnsafeFileError, ValueError)
    assert issubclass(registry.ReadOnlyError, PermissionError)
    assert issubclass(registry.LockTimeoutError, TimeoutError)
    assert issubclass(registry.MissingDependencyError, ImportError)
    # KeyError's repr-quoting does not leak into the message.
    assert str(registry.KernelNotFoundError("No kernel named 'x'.")) == "No kernel named 'x'."


def run_fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_import_registry_does_not_import_tensorflow_keras_or_pydantic() -> None:
    loaded = run_fresh(
        "import sys, registry; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'pydantic', 'torch') if m in sys.modules))"
    )
    assert loaded == "[]"


def test_load_add_list_do_not_import_tensorflow(tmp_path) -> None:
    loaded = run_fresh(
        "import sys, registry; "
        f"r = registry.Registry({str(tmp_path)!r}); r.add('k', [[1.0]]); r.load('k').spec; r.list_kernels(); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))"
    )
    assert loaded == "[]"


def test_as_layout_gives_writeable_arrays_frameworks_take_without_warnings() -> None:
    import warnings

    import numpy as np

    kernel = registry.load("sobel_x")
    for layout in ("HW", "HWIO", "OIHW"):
        array = kernel.as_layout(layout)
        assert array.flags.writeable and array.flags.c_contiguous, layout
        array[...] = 0
    np.testing.assert_array_equal(kernel.array, [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert not kernel.array.flags.writeable
    import pytest

    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(kernel.as_layout("OIHW"))
