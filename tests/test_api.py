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
    assert set(registry.__all__) == public - {"annotations", "TYPE_CHECKING", "Any"}


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
