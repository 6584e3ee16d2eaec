"""The Registry: add, load, list, remove, verify, and what each refuses."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import registry
from registry import (
    IntegrityError,
    InvalidKernelError,
    InvalidNameError,
    KernelNotFoundError,
    Registry,
)


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_add_then_load_gives_the_same_bytes_and_record(reg: Registry) -> None:
    values = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
    added = reg.add("edges/sobel", values, description="Sobel x", tags=["edge"], license="MIT")
    loaded = reg.load("edges/sobel")
    assert loaded.ref == added.ref == "edges/sobel@1"
    assert loaded.array.dtype == np.float32
    np.testing.assert_array_equal(loaded.array, values)
    assert loaded.spec.provenance.description == "Sobel x"
    assert loaded.spec.tags == ("edge",)
    assert loaded.spec.provenance.origin == "handmade"
    assert loaded.spec.sha256 == added.sha256


def test_array_is_read_only_and_the_callers_array_is_untouched(reg: Registry) -> None:
    values = np.ones((3, 3), np.float32)
    kernel = reg.add("ones", values)
    assert values.flags.writeable
    with pytest.raises(ValueError):
        kernel.array[0, 0] = 5
    with pytest.raises(ValueError):
        reg.load("ones").array[0, 0] = 5


def test_versions_are_immutable_and_increase(reg: Registry) -> None:
    first = reg.add("k", [[1.0]])
    second = reg.add("k", [[2.0]])
    assert (first.version, second.version) == (1, 2)
    assert reg.load("k").version == 2
    assert reg.load("k@1").array[0, 0] == 1.0
    assert reg.versions("k") == [1, 2]


def test_identical_content_returns_the_latest_version(reg: Registry) -> None:
    reg.add("k", [[1.0, 2.0]])
    again = reg.add("k", [[1.0, 2.0]], description="same values")
    assert again.ref == "k@1"
    assert reg.versions("k") == [1]


def test_same_values_other_dtype_is_a_new_version(reg: Registry) -> None:
    reg.add("k", [[1, 2]], dtype="float32")
    assert reg.add("k", [[1, 2]], dtype="int8").ref == "k@2"


def test_removed_versions_are_never_reissued(reg: Registry) -> None:
    reg.add("k", [[1.0]])
    reg.add("k", [[2.0]])
    assert reg.remove("k@2") == ["k@2"]
    assert reg.add("k", [[3.0]]).ref == "k@3"
    with pytest.raises(KernelNotFoundError, match=r"has no version 2 \(it has: 1, 3\)"):
        reg.load("k@2")


def test_remove_bare_name_with_several_versions_asks_to_pin(reg: Registry) -> None:
    reg.add("k", [[1.0]])
    reg.add("k", [[2.0]])
    with pytest.raises(InvalidKernelError, match=r"name one \(k@1, k@2\)"):
        reg.remove("k")
    assert reg.remove("k", all_versions=True) == ["k@1", "k@2"]
    assert reg.list_kernels() == []
    assert not any((reg.path / "kernels").rglob("*.h5"))


def test_unknown_name_suggests_close_names(reg: Registry) -> None:
    reg.add("sobel_x", [[1.0, -1.0]])
    with pytest.raises(KernelNotFoundError) as info:
        reg.load("sobel_xx")
    assert str(info.value) == (
        f"No kernel named 'sobel_xx' in {reg.path}. Did you mean 'sobel_x' or 'sobel'? See 'kreg list'."
    )
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Sobel", "Use lowercase letters"),
        ("a/../b", "must not contain '..'"),
        ("/abs", "must not start with '/'"),
        ("x" * 129, "at most 128 characters"),
        ("a//b", "segments joined by '/'"),
        (".hidden", "starting with a letter or digit"),
        ("", "must not be empty"),
    ],
)
def test_bad_names_say_what_is_allowed(reg: Registry, name: str, message: str) -> None:
    with pytest.raises(InvalidNameError, match=message):
        reg.add(name, [[1.0]])


@pytest.mark.parametrize(
    ("values", "options", "message"),
    [
        (np.ones((3, 3), np.int64), {}, r"dtype int64 is not stored by kreg; allowed: float16, float32"),
        (np.ones((3, 3), np.complex64), {}, "must be numbers"),
        (np.array([[np.nan, 1.0]]), {}, "must be finite"),
        (np.ones((0, 3), np.float32), {}, "at least one value"),
        (np.ones(3, np.float32), {}, "Layout HW needs values of rank 2"),
        (np.ones((3, 3, 1, 1), np.float32), {}, "need an explicit layout"),
        (np.ones((3, 3), np.float32), {"layout": "CHW"}, "layout must be one of HW, HWIO, HWIM, OIHW"),
        (np.ones((3, 3), np.float32), {"layout": "HWIO"}, "needs values of rank 4"),
        ([[1, 2], [3]], {}, "nested lists of equal lengths"),
        ([[300.0]], {"dtype": "uint8"}, "would change them"),
        (np.ones((3, 3), np.float32), {"dtype": "float128"}, "dtype must be one of"),
        (np.ones((3, 3), np.float32), {"license": "MIT; rm -rf"}, r"provenance.license"),
    ],
)
def test_bad_values_say_what_was_received(reg: Registry, values, options, message) -> None:
    with pytest.raises(InvalidKernelError, match=message):
        reg.add("k", values, **options)
    assert reg.list_kernels() == []


def test_a_masked_array_is_refused_and_its_filled_values_are_stored(reg: Registry) -> None:
    # The mask used to be dropped: what was under it was stored as if it were values.
    data = np.array([[1.0, 99.0], [3.0, 4.0]], "f4")
    masked = np.ma.masked_array(data, mask=[[False, True], [False, False]])
    with pytest.raises(InvalidKernelError, match=r"masked array \(1 of 4 values masked\).*values\.filled\(") as caught:
        reg.add("k", masked)
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidKernelError, match="The bias values came as a numpy masked array"):
        reg.add("k", data, bias=np.ma.masked_array([1.0], mask=[True]))
    nothing_masked = np.ma.masked_array(data, mask=False)  # the caller still says what a mask means
    with pytest.raises(InvalidKernelError, match=r"\(0 of 4 values masked\)"):
        reg.add("k", nothing_masked)
    assert reg.list_kernels() == []
    reg.add("k", masked.filled(0))
    np.testing.assert_array_equal(reg.load("k@1").array, [[1.0, 0.0], [3.0, 4.0]])


def test_a_masked_tensor_is_refused_before_it_becomes_a_kernel() -> None:
    from registry.adapters.learned import from_tensors

    weight = np.ma.masked_array(np.ones((1, 1, 3, 3), "f4"), mask=np.eye(3, dtype=bool)[None, None])
    with pytest.raises(InvalidKernelError, match=r"The tensor 'c.weight' came as a numpy masked array \(3 of 9"):
        from_tensors({"c.weight": weight}, "c")
    bias = np.ma.masked_array([0.5], mask=[True])
    with pytest.raises(InvalidKernelError, match=r"The tensor 'c.bias' came as a numpy masked array"):
        from_tensors({"c.weight": weight.filled(0), "c.bias": bias}, "c")


def test_invalid_metadata_is_refused_before_anything_is_written(reg: Registry) -> None:
    reg.add("k", [[1.0]])
    before = tree(reg.path)
    with pytest.raises(InvalidKernelError):
        reg.add("k", [[1.0]], license="not/spdx")
    assert tree(reg.path) == before


def test_an_add_failing_after_its_object_was_written_leaves_nothing_behind(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.add("k", [[1.0]])
    before = tree(reg.path)
    real_commit = type(reg.backend).commit
    written = []

    def failing_commit(self, root, token):  # type: ignore[no-untyped-def]
        written.extend(p.name for p in (reg.path / "kernels" / "k").iterdir())
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(type(reg.backend), "commit", failing_commit)
    with pytest.raises(OSError):
        reg.add("k", [[2.0]])
    monkeypatch.setattr(type(reg.backend), "commit", real_commit)
    assert "@2.h5" in written, "the failure came before the object was written: nothing was tested"
    assert tree(reg.path) == before
    assert reg.add("k", [[3.0]]).ref == "k@2"


def test_verify_rereads_from_the_store_even_with_a_warm_cache(reg: Registry) -> None:
    kernel = reg.add("k", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert reg.load("k").sha256 == kernel.sha256  # the values are now cached in memory
    obj = reg.path / "kernels" / "k" / "@1.h5"
    data = bytearray(obj.read_bytes())
    offset = data.find(np.arange(6, dtype="<f4").tobytes())
    data[offset] ^= 0xFF
    obj.write_bytes(bytes(data))
    problems = reg.verify()
    assert problems and "sha256" in problems[0][1], problems


def test_oihw_is_converted_to_hwio_and_back(reg: Registry) -> None:
    rng = np.random.default_rng(0)
    oihw = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    kernel = reg.add("torch/conv1", oihw, layout="OIHW")
    assert kernel.layout == "HWIO" and kernel.shape == (5, 5, 3, 8)
    assert kernel.spec.provenance.source_layout == "OIHW"
    np.testing.assert_array_equal(kernel.as_layout("OIHW"), oihw)
    np.testing.assert_array_equal(reg.load("torch/conv1").array, oihw.transpose(2, 3, 1, 0))


def test_convolution_kernels_are_flipped_and_recorded(reg: Registry) -> None:
    conv = np.arange(9, dtype=np.float32).reshape(3, 3)
    kernel = reg.add("flipped", conv, convolution=True)
    np.testing.assert_array_equal(kernel.array, conv[::-1, ::-1])
    assert kernel.spec.provenance.source_operation == "convolution"
    assert kernel.spec.operation == "correlation"


def test_list_filters_and_sorts_naturally(reg: Registry) -> None:
    for name in ["gauss_11", "gauss_3", "sobel_x", "team/gauss_5"]:
        reg.add(name, [[1.0]], tags=["blur"] if "gauss" in name else ["edge"])
    assert [i.name for i in reg.list_kernels()] == ["gauss_3", "gauss_11", "sobel_x", "team/gauss_5"]
    assert [i.name for i in reg.list_kernels("gauss*")] == ["gauss_3", "gauss_11"]
    assert [i.name for i in reg.list_kernels("*gauss*", exclude="team/*")] == ["gauss_3", "gauss_11"]
    assert [i.name for i in reg.list_kernels(tags=["edge"])] == ["sobel_x"]
    reg.add("sobel_x", [[2.0]])
    assert [i.ref for i in reg.list_kernels("sobel_x", all_versions=True)] == ["sobel_x@1", "sobel_x@2"]


def test_bit_flip_is_found_by_verify_and_refused_by_load(reg: Registry) -> None:
    reg.add("k", np.arange(64, dtype=np.float32).reshape(8, 8))
    obj = reg.path / "kernels" / "k" / "@1.h5"
    with h5py.File(obj, "r") as f:
        offset = f["kernels/k/@1"].id.get_offset()
    data = bytearray(obj.read_bytes())
    data[offset + 17] ^= 0x10
    obj.write_bytes(bytes(data))
    fresh = Registry(reg.path, builtins=False)
    with pytest.raises(IntegrityError, match="do not match their sha256"):
        fresh.load("k")
    problems = fresh.verify()
    assert [ref for ref, _ in problems] == ["k@1"]
    assert "do not match their sha256" in problems[0][1]


def test_verify_is_clean_on_a_fresh_registry(reg: Registry) -> None:
    reg.add("a", [[1.0]])
    reg.add("b/c", np.ones((3, 3, 2, 4), np.float16), layout="HWIO")
    assert reg.verify() == []
    assert reg.verify(["b/c"]) == []
    with pytest.raises(KernelNotFoundError):
        reg.verify(["nope"])


def test_batch_commits_once_and_aborts_whole(reg: Registry) -> None:
    with reg.batch():
        for i in range(5):
            reg.add(f"k{i}", [[float(i)]])
    assert len(reg.list_kernels()) == 5
    with pytest.raises(RuntimeError), reg.batch():
        reg.add("more", [[1.0]])
        raise RuntimeError("abort")
    assert "more" not in reg
    assert len(list((reg.path / "kernels").rglob("*.h5"))) == 5


def test_registry_is_a_context_manager_with_an_informative_repr(reg_path: Path) -> None:
    with Registry(reg_path, builtins=False) as reg:
        reg.add("k", [[1.0]])
        assert repr(reg) == f"<kreg Registry {str(reg_path)!r} (1 kernel versions, 0 built-in names)>"
    assert repr(reg) == f"<kreg Registry {str(reg_path)!r} (closed)>"
    with pytest.raises(ValueError, match="is closed"):
        reg.load("k")


def test_refuses_to_write_into_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InvalidKernelError, match="is not a kreg registry"):
        Registry(tmp_path, builtins=False).add("k", [[1.0]])
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_module_functions_use_kreg_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KREG_DB", str(tmp_path / "env-reg"))
    kernel = registry.add("team/k", [[1.0, 2.0]])
    assert registry.load("team/k").ref == kernel.ref
    assert [i.ref for i in registry.list_kernels("team/*")] == ["team/k@1"]
    assert registry.verify() == []
    assert registry.remove("team/k") == ["team/k@1"]
    assert (tmp_path / "env-reg" / "index.json").exists()


def test_builtin_names_cannot_be_shadowed(tmp_path: Path) -> None:
    from registry.format.container import write_container
    from registry.kernels.records import validated as _validated

    values = np.array([[1.0, -1.0]], np.float32)
    record = _validated(
        {
            "name": "step",
            "version": 1,
            "shape": (1, 2),
            "dtype": "float32",
            "layout": "HW",
            "sha256": registry.format.content.content_hash(values),
            "provenance": {"origin": "builtin", "created_at": "2026-01-01T00:00:00Z"},
        }
    )
    pack = tmp_path / "builtin.h5"
    write_container(pack, "pack", [(record, values)])
    reg = Registry(tmp_path / "reg", builtins=pack)
    assert reg.load("step").ref == "step@1"
    with pytest.raises(registry.ReadOnlyError, match="cannot be shadowed"):
        reg.add("step", [[2.0]])
    with pytest.raises(registry.ReadOnlyError):
        reg.remove("step")
    assert [i.builtin for i in reg.list_kernels()] == [True]


def test_default_registry_lives_in_the_user_data_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs

    from registry._paths import default_registry_path

    monkeypatch.delenv("KREG_DB", raising=False)
    assert default_registry_path() == platformdirs.user_data_path("kreg", appauthor=False) / "registry"
    monkeypatch.setenv("KREG_DB", "~/somewhere")
    assert default_registry_path() == Path("~/somewhere").expanduser()
    explicit = registry.default_registry("/tmp/kreg-explicit-path")
    assert explicit.path == Path("/tmp/kreg-explicit-path")


def test_verify_reports_progress(reg: Registry) -> None:
    reg.add("a", [[1.0]])
    reg.add("b", [[2.0]])
    seen: list[str] = []
    assert reg.verify(progress=seen.append) == []
    assert seen == ["a@1", "b@1"]


def test_loading_a_stored_kernel_in_a_fresh_process_needs_neither_hdf5_nor_pydantic(tmp_path: Path) -> None:
    import subprocess
    import sys

    reg = Registry(tmp_path / "reg")
    reg.add("team/k", [[1.0, 2.0]])
    code = ("import sys, registry; k = registry.load('team/k'); assert k.array.tolist() == [[1.0, 2.0]]; "
            "print(sorted(m for m in ('h5py', 'pydantic', 'tensorflow', 'torch', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "KREG_DB": str(tmp_path / "reg")}).stdout
    assert out.strip() == "[]"


def test_packs_have_a_public_api_on_the_registry(tmp_path: Path) -> None:
    from registry.format.signing import keygen

    src = Registry(tmp_path / "src", builtins=False)
    src.add("team/edge", [[1.0, -1.0]], description="step")
    src.add("team/blur", np.full((3, 3), 1 / 9, np.float32))
    private, public, _ = keygen(tmp_path / "key")
    pack = src.export("team/*", tmp_path / "team.h5", sign=private, author="vision")
    dst = Registry(tmp_path / "dst", builtins=False)
    plan = dst.import_pack(pack, prefix="them/", trust=[str(public)], dry_run=True)
    assert [step.result for step in plan.steps] == ["them/team/blur@1", "them/team/edge@1"]
    assert dst.list_kernels() == []
    dst.import_pack(pack, prefix="them/", trust=[str(public)])
    edge = dst.load("them/team/edge")
    assert edge.array.tolist() == [[1.0, -1.0]]
    assert edge._record["provenance"]["pack"]["name"] == "team"
