"""The static catalogue (``kreg site``): what its pages hold, read back with the standard library's
HTML parser, NumPy and matplotlib's PNG reader; incremental rebuilds; the size budget; publishing
to a real S3 server. The browser's view of the same site is in ``test_site_browser.py``."""

from __future__ import annotations

import io
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import registry
from registry._exceptions import InvalidKernelError

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")
pytest.importorskip("skimage")

from registry.cli import cli
from registry.site import INDEX_BUDGET, INDEX_PER_NAME, PAGE_BUDGET, build_site
from registry.site.output import MANIFEST

HOSTILE = {
    "description": "<script>alert(1)</script> and <img src=x onerror=alert(2)>",
    "author": "<img src=x onerror=alert(3)>",
    "references": ["javascript:alert(4)", '"><svg onload=alert(5)>'],
    "normalization": "</pre><script>alert(6)</script>",
}


class Page(HTMLParser):
    """Elements, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def body(self) -> str:
        return "".join(self.text)


def read_png(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(path.read_bytes()), format="png")


def natural(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A registry of a few kernels (one with two versions, one with hostile metadata) and its site."""
    root = tmp_path_factory.mktemp("site")
    values = {
        "team/k10": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
        "team/k2": np.full((5, 5), 1 / 25, np.float32),
        "team/edge": np.array([[1, 0, -1]] * 3, np.float32),
        "team/hostile": np.array([[1, 2], [3, 4]], np.float32),
    }
    with registry.Registry(root / "reg", builtins=False) as reg:
        reg.add("team/edge", np.array([[1, 0, -2]] * 3, np.float32), description="first edge", author="ann")
        for name, array in values.items():
            extra = HOSTILE if name == "team/hostile" else {}
            reg.add(name, array, tags=["edge"] if "edge" in name else ["blur"] if name == "team/k2" else [],
                    **{"description": f"kernel {name}", "author": "bob", **extra})
        build_site(reg, root / "site")
    return root / "reg", root / "site", values


def test_the_index_lists_every_name_in_natural_order_with_its_fields(built) -> None:
    _, site, values = built
    page = Page((site / "index.html").read_text())
    links = [a["href"] for a in page.all("a") if a["href"].startswith("k/")]
    names = [h[2:-5] for h in links]
    assert names == sorted(values, key=natural)  # k2 before k10, as kreg list sorts
    rows = [attrs for attrs in page.all("tr") if "data-version" in attrs]
    edge = rows[names.index("team/edge")]
    assert (edge["data-version"], edge["data-dtype"], edge["data-layout"], edge["data-origin"],
            edge["data-author"], json.loads(edge["data-tag"])) == ("2", "float32", "HW", "handmade", "bob", ["edge"])
    assert "3x3" in page.body and "kernel team/edge" in page.body and "first edge" not in page.body
    assert [a["id"] for a in page.all("input")] == ["search"]
    assert {s["data-filter"] for s in page.all("select")} == {"tag", "origin", "author"}  # no label recorded yet


def test_a_kernel_page_has_its_versions_pictures_snippets_and_downloads(built) -> None:
    _, site, values = built
    page = Page((site / "k/team/edge.html").read_text())
    assert [s["id"] for s in page.all("section")] == ["v2", "v1"]
    sources = [img["src"] for img in page.all("img")]
    assert "edge@2/heat.png" in sources and "edge@2/dft.png" in sources and "edge@2/diff-1.png" in sources
    assert "edge@2/camera-0.png" in sources and "edge@2/astronaut-0.png" in sources
    for src in sources:
        picture = read_png(site / "k/team" / src)
        assert picture.shape[0] > 8 and picture.shape[1] > 8
    # @2 - @1 is +1 in the right column, 0 elsewhere: white on the left, red (larger now) on the right
    diff = read_png(site / "k/team/edge@2/diff-1.png")[..., :3]
    left, right = diff[diff.shape[0] // 2, 2], diff[diff.shape[0] // 2, -3]
    assert left.min() > 0.95 and right[0] > 0.3 > right[2], (left, right)
    assert 'k = registry.load("team/edge@2")' in page.body and "kreg show team/edge@2" in page.body
    pin = re.search(r'registry\.load\("(team/edge@sha256:[0-9a-f]{12})"\)', page.body)
    with registry.Registry(built[0], builtins=False) as reg:  # the pin the page gives loads @2
        assert pin is not None and reg.load(pin.group(1)).version == 2
    assert "to_keras()" in page.body and "to_torch()" in page.body and "registry.jax.to_layer(k)" in page.body
    folder = site / "k/team/edge@2"
    np.testing.assert_array_equal(np.load(folder / "kernel.npy"), values["team/edge"])
    document = json.loads((folder / "kernel.json").read_text())
    assert document["values"] == values["team/edge"].tolist() and document["ref"] == "team/edge@2"
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(load_file(str(folder / "kernel.safetensors"))["team/edge"], values["team/edge"])
    with open(folder / "pack.h5", "rb") as handle:
        assert handle.read(8) == b"\x89HDF\r\n\x1a\n"
    import html

    raw = [json.loads(html.unescape(block)) for block in re.findall(
        r"<summary>Raw JSON</summary><pre class=\"text\"><code>(.*?)</code>", (site / "k/team/edge.html").read_text(), re.S)]
    assert [(r["version"], r["provenance"]["author"]) for r in raw] == [(2, "bob"), (1, "ann")]
    assert ("added team/edge@1" in page.body and "added team/edge@2" in page.body
            and page.body.index("added team/edge@1") < page.body.index("added team/edge@2"))


def test_the_frequency_response_tells_a_smoother_from_a_derivative(built) -> None:
    """Independent of kreg: a box blur passes zero frequency (bright centre), a Laplacian blocks it."""
    _, site, _ = built
    for name, bright in (("team/k2@1", True), ("team/k10@1", False)):
        picture = read_png(site / "k" / name / "dft.png")[..., :3].mean(axis=2)
        centre = picture[picture.shape[0] // 2, picture.shape[1] // 2]
        assert (centre > 0.95) if bright else (centre < 0.05), (name, centre)


def test_hostile_metadata_is_text_never_markup(built) -> None:
    _, site, _ = built
    for path in (site / "index.html", site / "k/team/hostile.html"):
        text = path.read_text()
        page = Page(text)
        assert len(page.all("script")) == (1 if path.name == "index.html" else 0)  # only the index's own
        assert not [img for img in page.all("img") if img.get("src") == "x" or "onerror" in img]
        assert not page.all("svg") and not [a for a in page.all("a") if "javascript" in (a.get("href") or "")]
    body = Page((site / "k/team/hostile.html").read_text()).body
    for value in (HOSTILE["description"], HOSTILE["author"], HOSTILE["normalization"], *HOSTILE["references"]):
        assert value in body


def test_control_characters_overrides_and_long_fields_render_as_visible_text() -> None:
    """A record kreg's schema would refuse (a forged pack's, say) still renders as text."""
    from registry.site import _kernel_page, environment
    from registry.site.model import NameView, TeamFacts, VersionView

    record = {"name": "team/x", "version": 1, "shape": [1, 1], "dtype": "float32", "layout": "HW",
              "sha256": "0" * 64, "tags": [],
              "provenance": {"description": "red \x1b[31m\x1b]0;owned\x07 \u202eevil\u202c " + "y" * 10_000,
                             "author": "\u2066rtl\u2069"}}
    env = environment()
    view = NameView("team/x", "k/team/x.html", [VersionView(record)], TeamFacts())
    text = _kernel_page(env, view, {"source": "here", "kreg_version": "0", "csp_script": "'none'"})
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text and "\u2066" not in text
    assert "\\x1b[31m" in text and "\\u202eevil" in text and "y" * 10_000 in text


def test_a_rebuild_after_one_add_rewrites_only_what_changed(tmp_path: Path) -> None:
    copy_reg, copy_site = tmp_path / "reg", tmp_path / "site"
    with registry.Registry(copy_reg, builtins=False) as reg:
        for name in ("team/k2", "team/k10", "team/edge"):
            reg.add(name, [[1.0, float(len(name))]])
        build_site(reg, copy_site)
    before = {p: p.read_bytes() for p in copy_site.rglob("*") if p.is_file()}
    for p in before:
        os.utime(p, (1_000_000, 1_000_000))
    with registry.Registry(copy_reg, builtins=False) as reg:
        reg.add("team/k2", [[2.0, 7.0]], description="brighter", author="cy")
        report = build_site(reg, copy_site)
    after = {p for p in copy_site.rglob("*") if p.is_file()}
    touched = sorted(str(p.relative_to(copy_site)) for p in after if p.stat().st_mtime != 1_000_000)
    new_version = [t for t in touched if t.startswith("k/team/k2@2/")]
    assert set(touched) - set(new_version) == {"index.html", "k/team/k2.html", MANIFEST}
    assert {"k/team/k2@2/heat.png", "k/team/k2@2/dft.png", "k/team/k2@2/kernel.npy"} <= set(new_version)
    assert sorted(report.written) == sorted(t for t in touched if t != MANIFEST)
    assert all(p.read_bytes() == data for p, data in before.items()
               if str(p.relative_to(copy_site)) not in touched)
    # removing a name removes its page and files, and nothing else
    with registry.Registry(copy_reg, builtins=False) as reg:
        reg.remove("team/k10")
        report = build_site(reg, copy_site)
    assert not (copy_site / "k/team/k10.html").exists() and not (copy_site / "k/team/k10@1").exists()
    assert "k/team/k10.html" in report.removed and (copy_site / "k/team/k2.html").exists()


def test_every_page_stays_under_its_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty versions whose descriptions are 8 KiB of markup (escaped to 4x their size)."""
    import registry.site as site_module
    from registry.site import pictures

    monkeypatch.setattr(pictures.Painter, "heatmap", lambda self, k: b"png")
    monkeypatch.setattr(pictures.Painter, "spectrum", lambda self, k: b"png")
    monkeypatch.setattr(pictures.Painter, "responses", lambda self, k: [])
    monkeypatch.setattr(pictures.Painter, "difference", lambda self, a, b: (None, "changed"))
    monkeypatch.setattr(pictures, "downloads", lambda reg, kernel: [("npy", "kernel.npy", b"")])
    monkeypatch.setattr(site_module, "downloads", pictures.downloads)
    with registry.Registry(tmp_path / "reg", builtins=False) as reg:
        with reg.batch():
            for i in range(130):  # more versions than a page lists, the newest 20 with 8 KiB of markup
                reg.add("big", [[float(i)]], description=("<&>" * 2700 if i >= 110 else "") + str(i),
                        author='"' * 256)
            for i in range(30):  # the largest index rows the schema allows
                reg.add(f"small/{'k' * 100}{i}", [[float(i)]], description='"' * 8000, author='"' * 256,
                        tags=[f"{i:02d}{j:02d}" + "t" * 60 for j in range(64)])
        build_site(reg, tmp_path / "one", ["big"])
        build_site(reg, tmp_path / "site")
    page = (tmp_path / "site/k/big.html").read_bytes()
    assert len(page) <= PAGE_BUDGET
    assert b'id="v130"' in page and b"older versions are listed above" in page
    assert b"30 older versions are not listed here" in page and b"30 earlier events left out" in page
    one, index = (len((tmp_path / f"{d}/index.html").read_bytes()) for d in ("one", "site"))
    assert one <= INDEX_BUDGET and index <= INDEX_BUDGET + 31 * INDEX_PER_NAME
    assert (index - one) / 30 <= INDEX_PER_NAME


def test_the_output_must_be_a_site_or_empty(tmp_path: Path) -> None:
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with registry.Registry(tmp_path / "reg", builtins=False) as reg:
        reg.add("a", [[1.0]])
        with pytest.raises(InvalidKernelError, match="not empty and holds no kreg site"):
            build_site(reg, other)
        with pytest.raises(InvalidKernelError, match="inside the registry"):
            build_site(reg, tmp_path / "reg" / "site")
        with pytest.raises(InvalidKernelError, match="No kernel matches"):
            build_site(reg, tmp_path / "s", ["nothing*"])
        site = tmp_path / "site"
        build_site(reg, site)
        target = tmp_path / "elsewhere"
        target.mkdir()
        os.symlink(target, site / "k" / "b@1")
        reg.add("b", [[2.0]])
        with pytest.raises(InvalidKernelError, match="symbolic link"):
            build_site(reg, site)
        assert list(target.iterdir()) == []
    assert (other / "notes.txt").read_text() == "mine" and sorted(os.listdir(other)) == ["notes.txt"]


def test_progress_and_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk is one StoreWriteError; the site before it stays whole and the next build finishes it."""
    from registry._exceptions import StoreWriteError
    from registry.site import output

    with registry.Registry(tmp_path / "reg", builtins=False) as reg:
        for name in ("a", "b", "c"):
            reg.add(name, [[1.0, -1.0]])
        calls: list[tuple[int, int]] = []
        build_site(reg, tmp_path / "site", progress=lambda done, total: calls.append((done, total)))
        assert calls == [(1, 3), (2, 3), (3, 3)]
        manifest = (tmp_path / "site" / MANIFEST).read_bytes()
        index = (tmp_path / "site/index.html").read_bytes()
        reg.add("d", [[2.0, -1.0]])
        real = os.replace

        def full(src: object, dst: object) -> None:
            if str(dst).endswith("heat.png"):
                raise OSError(28, "No space left on device")
            real(src, dst)

        monkeypatch.setattr(output.os, "replace", full)
        with pytest.raises(StoreWriteError, match="No space left on device"):
            build_site(reg, tmp_path / "site")
        assert (tmp_path / "site" / MANIFEST).read_bytes() == manifest
        assert (tmp_path / "site/index.html").read_bytes() == index
        assert not [p for p in (tmp_path / "site").rglob(".*tmp-*")]
        monkeypatch.setattr(output.os, "replace", real)
        report = build_site(reg, tmp_path / "site")
    assert "k/d.html" in report.written and (tmp_path / "site/k/d@1/heat.png").is_file()


@pytest.mark.parametrize("files", [{"../outside": "0"}, {"k": "0"}, {"a/./b": "0"}, "not a dict"])
def test_a_tampered_manifest_is_one_clear_error_or_harmless(tmp_path: Path, files: object) -> None:
    with registry.Registry(tmp_path / "reg", builtins=False) as reg:
        reg.add("a", [[1.0, -1.0]])
        reg.add("a", [[2.0, -1.0]])
        build_site(reg, tmp_path / "site")
        (tmp_path / "outside").write_text("keep")
        manifest = json.loads((tmp_path / "site" / MANIFEST).read_text())
        manifest["notes"] = {key: "garbage\twithout a source" for key in manifest["notes"]}
        manifest["files"] = files if not isinstance(files, dict) else {**manifest["files"], **files}
        (tmp_path / "site" / MANIFEST).write_text(json.dumps(manifest))
        if files == {"k": "0"}:  # a directory named in it is never removed, and the notes are redrawn
            build_site(reg, tmp_path / "site")
            assert (tmp_path / "site/k/a.html").is_file() and (tmp_path / "site/k/a@2/diff-1.png").is_file()
        else:
            with pytest.raises(InvalidKernelError, match="not a kreg site manifest.*delete that file"):
                build_site(reg, tmp_path / "site")
    assert (tmp_path / "outside").read_text() == "keep"


def test_kreg_site_on_the_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    db = str(tmp_path / "db")
    assert runner.invoke(cli, ["--db", db, "add", "team/a", "--values", "[[1, -1]]"]).exit_code == 0
    result = runner.invoke(cli, ["--db", db, "site", "team/*", "-o", str(tmp_path / "out")])
    assert (result.exit_code, result.stdout) == (0, f"{tmp_path / 'out'}\n")
    assert "for 1 kernel names" in result.stderr
    result = runner.invoke(cli, ["--db", db, "site", "nothing*", "-o", str(tmp_path / "out2")])
    assert result.exit_code != 0 and result.stderr.startswith("Error: No kernel matches")


def test_publishing_to_s3_sets_content_types_and_rebuilds_incrementally(built, s3_url: str) -> None:
    import obstore as obs
    from obstore.store import S3Store

    reg_path, _, _ = built
    target = s3_url.replace("s3://kreg-test/", "s3://kreg-test/site-") + "/"
    with registry.Registry(reg_path, builtins=False) as reg:
        first = build_site(reg, target, ["team/edge", "team/k2"])
        second = build_site(reg, target, ["team/edge", "team/k2"])
    assert first.written and second.written == [] and second.removed == []
    with registry.Registry(s3_url, builtins=False) as remote:  # a remote registry, a local site
        remote.add("team/far", [[1.0, 2.0]], description="from the bucket")
        build_site(remote, reg_path.parent / "from-s3")
    assert "from the bucket" in (reg_path.parent / "from-s3/k/team/far.html").read_text()
    prefix = target[len("s3://kreg-test/"):].strip("/")
    store = S3Store("kreg-test", endpoint=os.environ["AWS_ENDPOINT_URL"], region="us-east-1",
                    client_options={"allow_http": True}, virtual_hosted_style_request=False)
    types = {}
    for path in ("index.html", "assets/site.css", "k/team/edge.html", "k/team/edge@2/heat.png",
                 "k/team/edge@2/kernel.json", "k/team/edge@2/kernel.npy"):
        result = obs.get(store, f"{prefix}/{path}")
        types[path] = result.attributes.get("Content-Type")
    assert types == {"index.html": "text/html; charset=utf-8", "assets/site.css": "text/css; charset=utf-8",
                     "k/team/edge.html": "text/html; charset=utf-8", "k/team/edge@2/heat.png": "image/png",
                     "k/team/edge@2/kernel.json": "application/json",
                     "k/team/edge@2/kernel.npy": "application/octet-stream"}


def test_publishing_to_azure_sets_content_types_and_rebuilds_incrementally(built, az_url: str) -> None:
    import obstore as obs

    from registry.store.clients import make_store, wait_limits

    reg_path, _, _ = built
    target = az_url + "-site/"
    with registry.Registry(reg_path, builtins=False) as reg:
        first = build_site(reg, target, ["team/edge"])
        second = build_site(reg, target, ["team/edge"])
    assert first.written and second.written == [] and second.removed == []
    container, _, prefix = target[len("az://"):].partition("/")
    store = make_store("az", container, prefix.strip("/"), 4, wait_limits(), target)  # Azurite's own answer
    types = {path: obs.get(store, path).attributes.get("Content-Type")
             for path in ("index.html", "assets/site.css", "k/team/edge@2/heat.png", "k/team/edge@2/kernel.json")}
    assert types == {"index.html": "text/html; charset=utf-8", "assets/site.css": "text/css; charset=utf-8",
                     "k/team/edge@2/heat.png": "image/png", "k/team/edge@2/kernel.json": "application/json"}


def test_kreg_site_imports_no_framework(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from registry.cli import cli\n"
        f"for args in (['add', 'a', '--values', '[[1, -1]]'], ['site', 'a', '-o', {str(tmp_path / 'out')!r}]):\n"
        f"    try: cli.main(['--db', {str(tmp_path / 'db')!r}, '-q', *args], standalone_mode=False)\n"
        "    except SystemExit as exc:\n"
        "        if exc.code: raise\n"
        "print('LOADED', sorted(m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.stdout.strip().splitlines()[-1] == "LOADED []", result.stderr[-2000:]


def test_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    import pty
    import subprocess
    import sys

    with registry.Registry(tmp_path / "db", builtins=False) as reg:
        reg.add("a", [[1.0, -1.0]])
    command = [sys.executable, "-m", "registry", "--db", str(tmp_path / "db"), "site", "a", "-o"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    master, slave = pty.openpty()
    with subprocess.Popen([*command, str(tmp_path / "tty")], stdin=slave, stdout=slave, stderr=slave, env=env) as run:
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    os.close(master)
    assert run.returncode == 0 and b"building the site" in seen and b"100%" in seen
    piped = subprocess.run([*command, str(tmp_path / "piped")], capture_output=True, env=env)
    assert piped.returncode == 0 and b"building the site" not in piped.stderr
