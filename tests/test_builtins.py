"""The built-in database: every kernel validates, verifies, regenerates, factors; source and build agree."""

from __future__ import annotations

import numpy as np
import pytest

import registry
from registry import Registry
from registry.kernels.families import FAMILIES, get_family, separable_factors
from registry.kernels.build_db import build
from registry._paths import builtin_db_path

SOURCE = builtin_db_path().parent / "kernels.toml"
BUILT = build(SOURCE)
NAMES = [record["name"] for record, _ in BUILT]


@pytest.fixture(scope="module")
def builtins(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(tmp_path_factory.mktemp("empty"))


def test_the_database_ships_and_lists_every_source_entry(builtins: Registry) -> None:
    assert builtin_db_path().is_file()
    listed = {info.name for info in builtins.list_kernels(origin="builtin")}
    assert listed == set(NAMES)
    assert len(NAMES) >= 50


def test_source_and_built_database_agree(builtins: Registry) -> None:
    """kernels.toml is the source of truth: `make kernels` must have been run after editing it."""
    for record, values in BUILT:
        kernel = builtins.load(record["name"])
        shipped = dict(kernel._record)
        # The separable factors come from LAPACK's SVD, whose last bits vary with the BLAS build
        # and CPU: compared to 1e-12, everything else (values included) byte for byte.
        factors, expected = shipped.pop("separable", None), record.get("separable")
        assert shipped == {k: v for k, v in record.items() if k != "separable"}, \
            f"{record['name']}: record differs, run 'make kernels'"
        assert (factors is None) == (expected is None), f"{record['name']}: separable differs, run 'make kernels'"
        if factors is not None:
            for part in ("column", "row"):
                np.testing.assert_allclose(factors[part], expected[part], rtol=0, atol=1e-12,
                                           err_msg=f"{record['name']}: separable {part} differs, run 'make kernels'")
        assert kernel.array.tobytes() == values.tobytes(), f"{record['name']}: values differ"


@pytest.mark.parametrize("name", NAMES)
def test_every_builtin_validates_verifies_and_regenerates(builtins: Registry, name: str) -> None:
    kernel = builtins.load(name)  # sha256 checked on load
    spec = kernel.spec
    assert spec.provenance.origin == "builtin"
    assert spec.provenance.description and spec.provenance.license == "CC0-1.0"
    assert spec.normalization, "the normalization convention is stated"
    generator = spec.provenance.generator
    assert generator is not None
    again = get_family(generator.family).generate(generator.parameters, dtype=kernel.dtype.name)
    assert again.tobytes() == kernel.array.tobytes()
    assert builtins.verify([name]) == []


@pytest.mark.parametrize("name", NAMES)
def test_separable_factors_reproduce_the_kernel(builtins: Registry, name: str) -> None:
    kernel = builtins.load(name)
    factors = kernel.spec.separable
    if kernel.layout != "HW":
        assert factors is None
        return
    found = separable_factors(kernel.array)
    assert (factors is None) == (found is None), "rank-1 kernels, and only they, carry factors"
    if factors is not None:
        outer = np.outer(factors.column, factors.row)
        scale = np.abs(kernel.array).max()
        np.testing.assert_allclose(outer, kernel.array, atol=1e-6 * scale)


@pytest.mark.parametrize(
    ("name", "separable"),
    [("sobel_x", True), ("gaussian5", True), ("box3", True), ("laplacian4", False), ("gabor21_0", True),
     ("gabor21_90", True), ("sharpen", False), ("log9", False)],
)
def test_known_separability(builtins: Registry, name: str, separable: bool) -> None:
    assert (builtins.load(name).spec.separable is not None) is separable


def test_families_load_with_parameters_deterministically() -> None:
    a = registry.load("gaussian", sigma=2.0, ksize=9)
    b = registry.load("gaussian", ksize=9, sigma=2.0)
    assert a.array.tobytes() == b.array.tobytes()
    assert a.ref == "gaussian(ksize=9, sigma=2.0)"
    assert a.spec.provenance.generator.parameters == {"ksize": 9, "sigma": 2.0}
    assert registry.load("gaussian", sigma=2.0, ksize=9, dtype="float64").dtype == np.float64


def test_every_family_builds_with_its_defaults_or_says_what_it_needs() -> None:
    for name in FAMILIES:
        if name == "gaussian":
            with pytest.raises(registry.InvalidKernelError, match="Give ksize or a sigma > 0"):
                registry.load(name)
            continue
        kernel = registry.load(name)
        assert np.isfinite(kernel.array).all()


def test_bad_family_parameters_are_named() -> None:
    with pytest.raises(registry.InvalidKernelError, match="has no parameter 'size'; it takes ksize=0, sigma=0.0"):
        registry.load("gaussian", size=9)
    with pytest.raises(registry.InvalidKernelError, match="ksize must be an odd whole number"):
        registry.load("box", ksize=4)
    with pytest.raises(registry.KernelNotFoundError, match="Did you mean 'gabor'"):
        registry.load("gabr", sigma=1.0)


def test_a_generated_kernel_keeps_its_generator_when_stored(reg: Registry) -> None:
    stored = reg.add("my/blur", registry.load("gaussian", sigma=1.5))
    assert stored.spec.provenance.origin == "generated"
    assert stored.spec.provenance.generator.family == "gaussian"
    assert stored.spec.separable is not None
    assert reg.verify() == []


def test_verify_catches_a_stored_kernel_that_no_longer_matches_its_generator(reg: Registry) -> None:
    gauss = registry.load("gaussian", ksize=5)
    values = gauss.array.copy()
    values[2, 2] += 0.01
    generator = {"generator": {"family": "gaussian", "parameters": {"ksize": 5}}}
    with pytest.raises(registry.InvalidKernelError, match="does not make these values"):
        reg.add("my/odd", values, provenance=generator)  # add() refuses the lie...
    # ...so plant it below add(), as a damaged or hand-edited store would hold it.
    from registry.format.content import content_hash
    from registry.kernels.records import validated

    record = validated({"name": "my/odd", "version": 1, "shape": values.shape, "dtype": "float32",
                        "layout": "HW", "sha256": content_hash(values),
                        "provenance": {"origin": "generated", "created_at": "2026-01-01T00:00:00Z",
                                       **generator}})
    with reg._writing() as txn:
        txn.add(record, values)
    (problem,) = reg.verify()
    assert problem[0] == "my/odd@1" and "regenerated values differ" in problem[1]


def test_builtins_cannot_be_shadowed_or_removed(reg_path) -> None:
    reg = Registry(reg_path)
    with pytest.raises(registry.ReadOnlyError, match="'sobel_x' is a built-in kernel and cannot be shadowed"):
        reg.add("sobel_x", [[1.0]])
    with pytest.raises(registry.ReadOnlyError, match="built-in kernel family"):
        reg.add("gaussian", [[1.0]])
    with pytest.raises(registry.ReadOnlyError):
        reg.remove("sobel_x")


def test_the_builtin_database_is_read_through_the_guard(tmp_path) -> None:
    import shutil

    import h5py

    tampered = tmp_path / "builtin.h5"
    shutil.copy(builtin_db_path(), tampered)
    with h5py.File(tampered, "r+") as f:
        f["kernels/sneaky"] = h5py.ExternalLink("/etc/passwd", "/")
    reg = Registry(tmp_path / "reg", builtins=tampered)
    with pytest.raises(registry.UnsafeFileError, match="an external link"):
        reg.load("sobel_x")


@pytest.mark.parametrize("name", NAMES)
def test_records_read_cleanly(builtins: Registry, name: str) -> None:
    """One-line descriptions, each reference once, a normalization that describes this kernel."""
    record = builtins.load(name)._record
    provenance = record["provenance"]
    assert "\n" not in provenance["description"]
    assert len(provenance["references"]) == len(set(provenance["references"]))
    params = provenance["generator"]["parameters"]
    text = record["normalization"]
    assert "unit=True" not in text and "when normalized" not in text
    if params.get("unit") is False and params.get("scale", 1.0) == 1.0:
        assert "unit" not in text, f"{name} is not unit-scaled: {text!r}"
    if params.get("unit") is True:
        assert "OpenCV's integer weights" in text or "unit" in text
    if name.endswith("_skimage"):
        assert text.startswith("scikit-image's"), text
    if params.get("scale", 1.0) == -1.0:
        assert "negated" in text


@pytest.mark.parametrize(
    ("name", "column", "row"),
    [("sobel_x", [1, 2, 1], [-1, 0, 1]), ("sobel_y", [-1, 0, 1], [1, 2, 1]), ("scharr_x", [3, 10, 3], [-1, 0, 1]),
     ("prewitt_x", [1, 1, 1], [-1, 0, 1]), ("sobel5_x", [1, 4, 6, 4, 1], [-1, -2, 0, 2, 1]),
     ("sobel_xx", [1, 2, 1], [1, -2, 1]), ("sobel_x_unit", [0.25, 0.5, 0.25], [-0.5, 0, 0.5]),
     ("binomial3", [0.25, 0.5, 0.25], [0.25, 0.5, 0.25])],
)
def test_separable_factors_in_their_familiar_form(builtins: Registry, name: str, column, row) -> None:
    factors = builtins.load(name)._record["separable"]
    assert (factors["column"], factors["row"]) == (column, row)


@pytest.mark.parametrize("name", NAMES)
def test_integer_kernels_have_integer_factors(builtins: Registry, name: str) -> None:
    kernel = builtins.load(name)
    factors = kernel._record.get("separable")
    if factors is None or not np.array_equal(kernel.array, np.round(kernel.array)):
        return
    for values in (factors["column"], factors["row"]):
        assert values == [float(round(v)) for v in values], f"{name}: {factors}"


def test_the_builtin_database_is_a_pack_as_format_md_defines_one() -> None:
    """A reader that follows FORMAT.md requires a /manifest and its digest: the built-ins carry
    both and pass every check an imported pack gets (manifest, digest, record hashes)."""
    import hashlib

    import h5py

    from registry.kernels.build_db import load_source
    from registry.format.pack import parse_pack

    with h5py.File(builtin_db_path(), "r", locking=False) as f:  # other tests' registries hold it open
        stored, digest = f["manifest"][()].tobytes(), f.attrs["digest"]
    assert hashlib.sha256(stored).hexdigest() == digest
    pack = parse_pack(builtin_db_path())
    assert (pack.name, pack.manifest["author"], pack.signer) == ("kreg-builtins", "kreg", None)
    # dated by the source, not by the clock of the build, so a rebuild is the same file
    assert pack.manifest["created_at"] == load_source(SOURCE)["created_at"]
    # record_sha256 is not compared with a rebuild: the separable factors' last bits vary with the BLAS
    assert [(k["ref"], k["sha256"]) for k in pack.manifest["kernels"]] == [
        (f"{r['name']}@1", r["sha256"]) for r, _ in BUILT]
