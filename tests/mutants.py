"""A small curated mutation check: one-line changes the test suite must catch (``make mutants``).

Each mutant replaces one exact string in a temporary copy of the repository, optionally runs a
step after it (rebuilding the built-in database, so only the independent references can tell),
and runs the tests that guard that behaviour. The suite must FAIL on every mutant. A pattern
that is no longer found (or found twice) is reported as "pattern missing", a failure too: the
list is updated with the code. The store's mutants are a list of their own, ``STORE_MUTANTS``,
to be rewritten with the store.

Run: ``python tests/mutants.py [-k substring] [--list]``; exit status 0 only if all are killed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REBUILD_DB = (sys.executable, "-m", "registry.kernels.build_db", "kernels_db/kernels.toml", "kernels_db/builtin.h5")


@dataclass(frozen=True)
class Mutant:
    """One behaviour broken by one exact replacement.

    Attributes:
        name: short label for the table.
        path: the file, relative to the repository root.
        old: the exact text replaced (must occur exactly once).
        new: its replacement.
        tests: pytest arguments (files or node ids) that must fail.
        after: a command run in the copy after patching (e.g. rebuilding builtin.h5).
    """

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    after: tuple[str, ...] = ()


GUARD = ("tests/test_guard.py", "tests/test_hostile.py")
PACKS = ("tests/test_hostile.py", "tests/test_cli.py", "tests/test_guard.py")
BUILTINS = ("tests/test_fidelity.py", "tests/test_builtins.py")

MUTANTS: list[Mutant] = [
    # -- guard: hostile files -------------------------------------------------------------------
    Mutant("guard: external links allowed", "registry/format/guard.py",
           "            if isinstance(link, h5py.ExternalLink):\n",
           "            if False and isinstance(link, h5py.ExternalLink):\n", GUARD),
    # One limit serves the dataset-level and the per-chunk checks, so it is the line to break.
    Mutant("guard: any compression ratio", "registry/format/limits.py",
           "    max_compression_ratio: int = 100\n", "    max_compression_ratio: int = 10**12\n", GUARD),
    Mutant("guard: values not checked against sha256", "registry/format/guard.py",
           "            if digest != entry.record.get(\"sha256\"):\n", "            if False:\n",
           ("tests/test_store.py", "tests/test_guard.py", "tests/test_hostile.py")),
    # -- packs and signatures -------------------------------------------------------------------
    Mutant("signing: any signature verifies", "registry/format/signing.py",
           "        nacl.VerifyKey(bytes.fromhex(public_hex)).verify(message, bytes.fromhex(signature_hex))\n",
           "        nacl.VerifyKey(bytes.fromhex(public_hex))\n", PACKS),
    Mutant("pack: manifest digest unchecked", "registry/format/pack.py",
           "    elif digest != _sha256(data):\n", "    elif False:\n", PACKS),
    Mutant("pack: kernel vs manifest hash unchecked", "registry/format/pack.py",
           "        if listed[ref].get(\"sha256\") != record[\"sha256\"] or", "        if False and", PACKS),
    Mutant("pack: a signed pack stripped of its signature reads as unsigned", "registry/format/pack.py",
           "    if signature is None and public_key is None:\n", "    if signature is None:\n",
           ("tests/test_pack.py::test_a_signed_pack_stripped_of_its_signature_is_not_read_as_unsigned",)),
    Mutant("packs: rollback judged against the oldest earlier import", "registry/store/packs.py",
           "                if newest is None or seen > newest[0]:\n",
           "                if newest is None or seen < newest[0]:\n",
           ("tests/test_pack.py::test_a_rollback_is_judged_against_the_newest_earlier_import",)),
    Mutant("pack: reader has no time limit", "registry/store/packs.py",
           "        out, err = child.communicate(timeout=timeout)\n", "        out, err = child.communicate()\n",
           ("tests/test_fuzz.py::test_a_libhdf5_hang_found_by_fuzzing_is_a_clean_refusal",)),
    # -- built-ins: values rebuilt into builtin.h5, so only the references can tell ------------
    Mutant("built-ins: log9 sigma 1.4 -> 1.5", "kernels_db/kernels.toml",
           "params = { ksize = 9, sigma = 1.4 }", "params = { ksize = 9, sigma = 1.5 }", BUILTINS, REBUILD_DB),
    Mutant("built-ins: unsharp blurs with sigma 1", "registry/kernels/filters.py",
           "identity - get_gaussian_kernel2d(ksize=ksize, sigma=sigma))", "identity - get_gaussian_kernel2d(ksize=ksize, sigma=1.0))",
           BUILTINS, REBUILD_DB),
    Mutant("built-ins: LoG not shifted to sum 0", "registry/kernels/filters.py",
           "    kernel -= kernel.mean()\n", "    pass\n", BUILTINS, REBUILD_DB),
    Mutant("built-ins: Roberts diagonal flipped", "registry/kernels/filters.py",
           "else np.array([[1.0, 0.0], [0.0, -1.0]])", "else np.array([[-1.0, 0.0], [0.0, 1.0]])",
           BUILTINS, REBUILD_DB),
    Mutant("built-ins: OpenCV's sigma-from-size rule", "registry/kernels/filters.py",
           "        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8\n", "        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.9\n",
           BUILTINS, REBUILD_DB),
    Mutant("built-ins: Gabor rotated the other way", "registry/kernels/filters.py",
           "xr, yr = x * c + y * s, -x * s + y * c", "xr, yr = x * c - y * s, x * s + y * c", BUILTINS, REBUILD_DB),
    # -- typos refused, not obeyed ----------------------------------------------------------------
    Mutant("locations: 'S3://x' taken as a well-formed URL", "registry/_paths.py",
           'if separator == "://" and scheme == scheme.lower():', 'if separator == "://":',
           ("tests/test_cli_typos.py",)),
    Mutant("endpoints: a path after the S3 host accepted", "registry/store/clients.py",
           '(not path and parts.path not in ("", "/"))', '(False and parts.path not in ("", "/"))',
           ("tests/test_cli_typos.py",)),
    Mutant("layouts: a bias of another layout's length let through", "registry/adapters/learned.py",
           "    if bias is not None and bias != outputs[layout]:\n", "    if False:\n",
           ("tests/test_cli_tensor_layout.py",)),
    # -- emitted torch planes: each eager path ----------------------------------------------------
    Mutant("torch plane taps: the dilation ignored on rows", "registry/torch_fft.py",
           "part = work[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh,", "part = work[:, :, i : i + (ho - 1) * sh + 1 : sh,",
           ("tests/test_methods.py::test_torch_plane_modules_eager_and_scripted_give_scipys_numbers",)),
    Mutant("torch plane depthwise: the weight mirrored", "registry/torch.py",
           "weight = self.weight.expand(n * c, 1, kh, kw)", "weight = self.weight.flip(3).expand(n * c, 1, kh, kw)",
           ("tests/test_methods.py::test_a_torch_plane_modules_bias_on_each_eager_path",)),
    # -- kernels as inputs: what converters take ---------------------------------------------------
    Mutant("kernel_conv: torch's exporters given the grouped convolution", "registry/adapters/torch_dynamic.py",
           "return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())", "return False",
           ("tests/test_dynamic.py::test_torch_onnx_export_with_a_dynamic_batch_and_size",)),
    Mutant("kernel_conv: method='taps' not obeyed", "registry/adapters/dynamic.py",
           "    if p.method != \"auto\":\n        return p.method\n", "    if p.method != \"auto\":\n        return \"direct\"\n",
           ("tests/test_dynamic.py::test_tflite_with_a_dynamic_batch_and_size",)),
    # -- Keras layers: the FFT's factors, the border's copies, the taps under XLA --------------------
    Mutant("keras fft: the row's spectrum not conjugated", "registry/keras_fft.py",
           "transform(self.column, [size[0], 1]) * transform(self.row, [1, size[1]])",
           "transform(self.column, [size[0], 1]) * conj(transform(self.row, [1, size[1]]))",
           ("tests/test_methods.py::test_the_keras_fft_layer_pads_to_its_transform_length_on_any_image_size",)),
    Mutant("keras border: reflect101 copies the edge pixel", "registry/keras_fft.py",
           'skip = int(mode == "reflect101")', "skip = 0",
           ("tests/test_methods.py::test_the_keras_fft_layer_pads_to_its_transform_length_on_any_image_size",)),
    Mutant("keras plane under XLA: the taps' rows reversed", "registry/keras.py",
           "term = x[tuple(index)] * weight[i, j, 0, 0]",
           "term = x[tuple(index)] * weight[self.kernel_size[0] - 1 - i, j, 0, 0]",
           ("tests/test_methods.py::test_keras_plane_layers_compiled_by_xla_sum_their_taps",)),
    Mutant("keras fft under XLA: the column's pass reversed", "registry/keras_fft.py",
           "or None : self.strides[0], :] * column[i, 0, 0, 0]", "or None : self.strides[0], :] * column[kh - 1 - i, 0, 0, 0]",
           ("tests/test_methods.py::test_keras_plane_layers_compiled_by_xla_sum_their_taps",)),
]

# The store (registry/store/, v2): its mutants are a list of their own, to be kept with it.
STORE = ("tests/test_store.py", "tests/test_crash.py", "tests/test_faults.py", "tests/test_concurrency.py",
         "tests/test_full_disk.py", "tests/test_store_attacks.py")
LOCAL, TREE, WRITER = "registry/store/local.py", "registry/store/tree.py", "registry/store/writer.py"
LISTING, RECEIPTS = ("tests/test_listing.py",), ("tests/test_remote_receipts.py",)
INDEX_ATTACKS = ("tests/test_index_attacks.py",)
STORE_MUTANTS: list[Mutant] = [
    Mutant("store: no writers' lock", LOCAL,
           "            _flock(fd, self.lock_timeout, self.url)\n", "            pass\n", STORE),
    Mutant("store: a failed write is not undone", WRITER,
           "            delete_all(self.backend, self._placed)\n", "            pass\n", STORE),
    Mutant("store: file not fsynced before it is named", TREE,
           "                if sync:\n                    os.fsync(fd)\n",
           "                if False:\n                    os.fsync(fd)\n", STORE),
    Mutant("store: directory not fsynced after the link", LOCAL,
           "            try:\n                os.fsync(parent)\n", "            try:\n                pass\n", STORE),
    Mutant("store: new directory's parent not fsynced", TREE,
           "                    if sync:\n                        self.call(lambda: os.fsync(fd), where)\n",
           "                    if False:\n                        self.call(lambda: os.fsync(fd), where)\n", STORE),
    Mutant("store: root rename not fsynced", LOCAL,
           "            self._tree.call(lambda: os.fsync(fd), ROOT, committed=True)\n", "            pass\n", STORE),
    # (verify's `_view(fresh=True)` is not a mutant worth having: a local root is re-read whenever
    # its stamp changes, so `_view()` is equivalent there.)
    Mutant("store: verify() and fsck do not hash the values", "registry/store/fsck.py",
           "            values = obj.read(entry, verify=True)\n", "            values = obj.read(entry, verify=False)\n",
           STORE),
    # The listing and the receipts (against SeaweedFS).
    Mutant("listing: segments' runs not merged", "registry/store/listing.py",
           "    entries.sort(key=_version_order if all_versions else None)\n", "    pass\n", LISTING),
    Mutant("listing: fsck trusts the root's column widths", "registry/store/fsck.py",
           "and facts[1:] == column_widths(head)", "", LISTING),
    Mutant("listing: a block cut short is believed", "registry/format/segment.py",
           "        if entries.pop() != \"\" or set(map(str.count, entries, repeat(\"\\t\"))) - {9}:\n",
           "        if False:\n", LISTING),
    Mutant("index: a root whose prefixes overlap or leave gaps is believed", "registry/format/index.py",
           " or not covers_once(segments)", "", INDEX_ATTACKS),
    Mutant("receipts: kept while a removal commits", WRITER,
           "                    self.backend.delete(receipt_key(name, version))\n", "                    pass\n", RECEIPTS),
    Mutant("receipts: one naming another version is believed", "registry/store/reading.py",
           " or record[\"version\"] != version", "", RECEIPTS),
    Mutant("receipts: one with another hash than the index held here is believed", "registry/store/reading.py",
           "\n                or (sha256 is not None and record.get(\"sha256\") != sha256)", "", RECEIPTS),
    Mutant("cache: eviction removes files kreg never named", "registry/store/cache.py",
           "                        named = entry.name[:2] == folder and _DIGEST.fullmatch(entry.name)\n",
           "                        named = True\n", ("tests/test_remote_cache.py",)),
    # The catalogue site: hostile metadata is text, a rebuild writes only what changed.
    Mutant("site: templates not autoescaped", "registry/site/__init__.py",
           "autoescape=True,", "autoescape=False,", ("tests/test_site.py",)),
    Mutant("site: control characters and overrides emitted as they are", "registry/site/__init__.py",
           'env.filters["visible"] = lambda text: escape(text, quote=False)', 'env.filters["visible"] = str',
           ("tests/test_site.py",)),
    Mutant("site: a rebuild rewrites every file", "registry/site/output.py",
           "        if self.old.get(path) == key and self._exists(path):\n            return\n", "",
           ("tests/test_site.py",)),
    Mutant("site: older versions past the page budget kept", "registry/site/__init__.py",
           "        if len(text.encode()) > room:\n            version.detailed = False\n",
           "        if False:\n            version.detailed = False\n",
           ("tests/test_site.py",)),
    Mutant("gcs: the commit names the ETag, not the generation", "registry/store/clients.py",
           '{"e_tag": etag, "version": version} if version else {"e_tag": etag}', '{"e_tag": etag}',
           ("tests/test_remote_gcs.py",)),
    Mutant("commit: a lost answer's root built on ours taken for a conflict", "registry/store/object.py",
           "    if ours and ours <= named:\n", "    if False:\n", ("tests/test_remote_commit.py",)),
    Mutant("commit: a root naming some of our segments taken for ours landing", "registry/store/object.py",
           "    if ours and ours <= named:\n", "    if ours and ours & named:\n",
           ("tests/test_remote_commit.py::test_a_lost_answer_under_a_root_sharing_our_unchanged_segments",)),
    Mutant("commit: a lost answer under another writer's root taken for success", "registry/store/object.py",
           "                if outcome is _OTHER:  # another writer's root", "                if False:",
           ("tests/test_remote_commit.py::test_a_lost_answer_with_another_writer_in_between",)),
    Mutant("commit: a foreign root read back taken for ours landing", "registry/store/object.py",
           "    return _OTHER if time.monotonic() - started < SETTLE_SECONDS else _UNKNOWN\n",
           "    return current\n",
           ("tests/test_remote_commit.py::test_a_lost_answer_with_another_writer_in_between",)),
    Mutant("versions: a replayed add keeps a number issued and removed meanwhile", "registry/store/writer.py",
           "        if self._reissued(name, version):\n", "        if False:\n",
           ("tests/test_remote_commit.py::test_a_number_added_and_removed_meanwhile_is_not_issued_again",)),
    Mutant("versions: a number skipped for our object taken for a removed one", "registry/store/writer.py",
           "            self._own.add((name, version))\n            return False\n",
           "            return True\n",
           ("tests/test_remote_commit.py::test_a_number_skipped_for_our_object_stays_ours",)),
    Mutant("versions: a removed object deleted without its tombstone", "registry/store/writer.py",
           "if put_quietly(self.backend, tombstone_key(n, v), TOMBSTONE)]",
           "if put_quietly(self.backend, tombstone_key(n, v), TOMBSTONE) or True]",
           ("tests/test_remote_commit.py::test_a_removed_object_stays_until_its_tombstone_is_there",)),
    Mutant("put/delete: a request whose answer was lost is not sent again", "registry/store/object.py",
           'if (not getattr(exc, "unanswered", False) or', "if (True or",
           ("tests/test_remote_commit.py::test_an_object_put_whose_answer_is_lost_is_sent_again",
            "tests/test_remote_commit.py::test_a_receipt_delete_whose_answer_is_lost_is_sent_again")),
    Mutant("copy: a replayed copy moved off a number issued and removed meanwhile", "registry/store/writer.py",
           "            if put.placed:\n", "            if False:\n",
           ("tests/test_copy_remote.py::test_a_copy_refuses_a_number_another_writer_issued_and_removed_meanwhile",)),
    Mutant("copy: the source's labels and deprecations left behind", "registry/store/mirror.py",
           "            _curate(txn, source, name, as_name, {kernel.version for kernel in kernels})\n",
           "            pass\n",
           ("tests/test_copy.py::test_copy_keeps_labels_and_deprecations_and_never_overrules_the_target",)),
    Mutant("copy: a number the target issued for other content is taken as already there", "registry/store/mirror.py",
           "            if not same_content(txn.record(as_name, version), wanted):\n", "            if False:\n",
           ("tests/test_copy.py::test_a_number_the_target_issued_for_other_content_refuses_the_name",)),
    Mutant("removal: a cached receipt brings back a version the last root seen removed", "registry/store/reading.py",
           "                if int(parsed.version or 0) < view.next_version(parsed.name):\n",
           "                if False:\n",
           ("tests/test_remote_removal.py::test_once_a_machine_saw_the_removal_every_command_agrees",)),
    Mutant("removal: a long-lived Registry never re-checks the root for pinned loads", "registry/store/cache.py",
           "        if held is None or first_look or time.time() - held[2] < freshness:\n",
           "        if True:\n",
           ("tests/test_remote_removal.py::test_a_long_lived_registry_sees_other_machines_changes_on_its_next_call",)),
    Mutant("deprecation: latest does not skip a deprecated version", "registry/format/index.py",
           "    kept = [v for v in versions if v not in deprecated]\n", "    kept = list(versions)\n",
           ("tests/test_store_history.py::test_latest_skips_a_deprecated_version_which_still_loads_pinned_with_a_warning",
            "tests/test_cli_history.py::test_deprecate_warns_in_one_line_and_latest_skips_it")),
    Mutant("labels: a commit conflict drops the change instead of replaying it", WRITER,
           "                    op(self.edit)\n", "                    pass\n",
           ("tests/test_remote_history.py::test_a_label_that_loses_the_compare_and_swap_is_replayed_with_its_event_once",
            "tests/test_remote_history.py::test_racing_adds_labels_and_deprecations_lose_nothing")),
    Mutant("deprecation: the receipt stays, a cold pinned load does not warn", "registry/store/curation.py",
           "                txn.unreceipted.append((parsed.name, version))", "                pass",
           ("tests/test_store_history.py::test_a_cold_pinned_load_of_a_deprecated_version_warns_on_each_store",)),
    Mutant("history: an event is kept beside its change, not committed in its segment", "registry/format/index.py",
           '        self._facts(name)["events"].append(event)\n',
           '        self.base.segment(self.base.prefix_of(name)).meta.setdefault(name, {}).setdefault("events", [])'
           '.append(event)\n',
           ("tests/test_store_history.py::test_every_change_is_one_event_with_who_when_what_and_where",)),
]


def _copy_repo(target: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files, as they are now."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)


def _pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CI", None)  # a skipped test is not a kill, and not a failure either, here
    # A session of its own, killed whole afterwards: a mutant that breaks a time limit leaves
    # children looping (a libhdf5 hang) that must not outlive their run.
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                            *tests], cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        stdout, stderr = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    lines = [line for line in stdout.splitlines() if line.strip()]
    failed = [line.split(" - ")[0].removeprefix("FAILED ").removeprefix("ERROR ") for line in lines
              if line.startswith(("FAILED ", "ERROR "))]
    return run.returncode, (failed[0] if failed else lines[-1] if lines else stderr.strip()[-200:])


def run(mutants: list[Mutant], *, timeout: float) -> bool:
    with tempfile.TemporaryDirectory(prefix="kreg-mutants-") as tmp:
        copy = Path(tmp)
        _copy_repo(copy)
        baseline_tests = tuple(sorted({t.split("::")[0] for m in mutants for t in m.tests}))
        code, summary = _pytest(copy, baseline_tests, timeout)
        print(f"baseline ({len(baseline_tests)} test files): {summary}")
        if code != 0:
            print("the unmutated suite does not pass; mutants would prove nothing")
            return False
        rows, ok = [], True
        for mutant in mutants:
            started = time.monotonic()
            target = copy / mutant.path
            original = target.read_bytes()
            saved_db = (copy / "kernels_db" / "builtin.h5").read_bytes() if mutant.after else None
            text = original.decode()
            count = text.count(mutant.old)
            if count != 1:
                verdict, detail = "pattern missing", f"found {count} times in {mutant.path}"
            else:
                try:
                    target.write_text(text.replace(mutant.old, mutant.new))
                    if mutant.after:
                        subprocess.run(mutant.after, cwd=copy, check=True, capture_output=True,
                                       env={**os.environ, "PYTHONPATH": str(copy)})
                    code, detail = _pytest(copy, mutant.tests, timeout)
                    verdict = {1: "killed", 0: "SURVIVED"}.get(code, "error")
                finally:
                    target.write_bytes(original)
                    if saved_db is not None:
                        (copy / "kernels_db" / "builtin.h5").write_bytes(saved_db)
            ok &= verdict == "killed"
            rows.append((mutant.name, verdict, f"{time.monotonic() - started:.0f} s", detail))
            print(f"  {verdict:<15} {mutant.name}", flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'mutant':<{width}}  {'result':<15} {'time':>6}  first failing test (or pytest's summary)")
    for name, verdict, seconds, detail in rows:
        print(f"{name:<{width}}  {verdict:<15} {seconds:>6}  {detail[:110]}")
    killed = sum(r[1] == "killed" for r in rows)
    print(f"\n{killed} of {len(rows)} mutants killed")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only mutants whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--no-store", action="store_true", help="leave out STORE_MUTANTS")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS + ([] if args.no_store else STORE_MUTANTS) if args.k in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:<45} {m.path}")
        return
    sys.exit(0 if run(chosen, timeout=args.timeout) else 1)


if __name__ == "__main__":
    main()
