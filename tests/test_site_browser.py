"""The catalogue in a real browser: Debian's chromium driven by Playwright's Python package.

Every page is opened from ``file://``; each test records every request and fails on one that
leaves the site, on a console error, a page error or a dialog. Screenshots of the index and of
a kernel page are written to ``$KREG_SCREENSHOTS`` (default: pytest's temporary directory).
Without chromium or Playwright these tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import skip_or_fail_in_ci

import registry

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

#: What the hostile kernel carries; each must show as text.
HOSTILE = {
    "description": "<script>alert(1)</script> <img src=x onerror=alert(2)>",
    "author": "<img src=x onerror=alert(3)>",
    "references": ["javascript:alert(4)", "<iframe src=https://example.com/></iframe>"],
    "normalization": "</code></pre><script>alert(5)</script>",
}


def chromium_path() -> str:
    found = os.environ.get("KREG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        skip_or_fail_in_ci("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return str(found)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail_in_ci("playwright is not installed (pip install 'kreg[test]')")
    with sync_playwright() as p:
        # --no-sandbox: CI and this machine run as root, where chromium's sandbox refuses to start.
        instance = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser-site")
    with registry.Registry(root / "reg", builtins=False) as reg:
        reg.add("team/edge", np.array([[1, 0, -2]] * 3, np.float32), description="first try", author="ann", tags=["edge"])
        reg.add("team/edge", np.array([[1, 0, -1]] * 3, np.float32), description="horizontal step", author="bob",
                tags=["edge"])
        reg.add("team/blur10", np.full((3, 3), 1 / 9, np.float32), description="box blur", author="ann", tags=["blur"])
        reg.add("team/blur2", np.full((5, 5), 1 / 25, np.float32), description="wider box", author="cy", tags=["blur"])
        reg.add("lab/rgb", np.linspace(-1, 1, 54, dtype=np.float32).reshape(3, 3, 3, 2), layout="HWIO",
                description="a learned colour filter", origin="learned", author="dee")
        reg.add("team/hostile", np.array([[1, -1]], np.float32), **HOSTILE)
        reg.label("team/edge@2", "stable")
        reg.deprecate("team/edge@1", "sign bug, use @2")
        reg.deprecate("team/blur2@1", "too wide, use team/blur10")
        reg.site(root / "site")
    return root / "site"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("KREG_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Watched:
    """A page with everything that must not happen recorded: requests outside the site,
    console errors, page errors, dialogs."""

    def __init__(self, browser: Any, site: Path) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.site = site.resolve().as_uri()
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []

        def route(r: Any) -> None:
            self.requests.append(r.request.url)
            if r.request.url.startswith(self.site + "/"):
                r.continue_()
            else:  # never let it reach a network
                self.outside.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open(self, path: str) -> Any:
        self.page.goto(f"{self.site}/{path}")
        self.page.wait_for_load_state("load")
        return self.page

    def clean(self) -> None:
        assert (self.outside, self.errors, self.dialogs) == ([], [], [])

    def visible_names(self) -> list[str]:
        return self.page.eval_on_selector_all("#kernels tbody tr:not([hidden]) td:first-child a",
                                              "links => links.map(a => a.textContent)")


@pytest.fixture
def watched(browser: Any, site: Path) -> Iterator[Watched]:
    w = Watched(browser, site)
    yield w
    w.context.close()


def test_the_index_opens_from_file_with_nothing_from_outside(watched: Watched, shots: Path) -> None:
    page = watched.open("index.html")
    assert watched.visible_names() == ["lab/rgb", "team/blur2", "team/blur10", "team/edge", "team/hostile"]
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"  # the site's CSS applied
    page.screenshot(path=str(shots / "index.png"), full_page=True)
    watched.clean()
    assert all(url.startswith("file://") for url in watched.requests)


def test_typing_in_the_search_box_filters_rows(watched: Watched) -> None:
    page = watched.open("index.html")
    page.fill("#search", "blur")
    assert watched.visible_names() == ["team/blur2", "team/blur10"]
    page.fill("#search", "BOB step")  # every word, any field, any case
    assert watched.visible_names() == ["team/edge"]
    assert page.text_content("#count") == "1 shown"
    page.fill("#search", "")
    assert len(watched.visible_names()) == 5
    watched.clean()


def test_sorting_and_filters(watched: Watched) -> None:
    page = watched.open("index.html")
    page.click("th[data-key=version] button")
    assert watched.visible_names()[-1] == "team/edge"  # the only version 2, ascending
    page.click("th[data-key=name] button")
    assert watched.visible_names() == ["lab/rgb", "team/blur2", "team/blur10", "team/edge", "team/hostile"]
    page.click("th[data-key=name] button")  # again: descending, natural order reversed
    assert watched.visible_names() == ["team/hostile", "team/edge", "team/blur10", "team/blur2", "lab/rgb"]
    page.click("th[data-key=shape] button")
    assert watched.visible_names()[:2] == ["team/hostile", "team/blur10"]  # 1x2, then 3x3 before 3x3x3x2 and 5x5
    page.select_option("#filter-tag", "blur")
    assert sorted(watched.visible_names()) == ["team/blur10", "team/blur2"]
    page.select_option("#filter-author", "ann")
    assert watched.visible_names() == ["team/blur10"]
    page.select_option("#filter-tag", "")
    page.select_option("#filter-author", "")
    page.select_option("#filter-origin", "learned")
    assert watched.visible_names() == ["lab/rgb"]
    watched.clean()


def test_the_keyboard_alone_reaches_every_kernel(watched: Watched) -> None:
    page = watched.open("index.html")
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        href = page.evaluate("document.activeElement && document.activeElement.getAttribute('href')")
        if href and href.startswith("k/"):
            reached.append(href)
    assert sorted(set(reached)) == sorted(f"k/{n}.html" for n in
                                          ["lab/rgb", "team/blur2", "team/blur10", "team/edge", "team/hostile"])
    page.focus("a[href='k/team/edge.html']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/k/team/edge.html")
    assert page.text_content("h1") == "team/edge"
    watched.clean()


def test_a_kernel_page_shows_its_pictures_versions_and_history(watched: Watched, shots: Path, site: Path) -> None:
    page = watched.open("k/team/edge.html")
    images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert len(images) >= 9 and all(done and width > 0 for _, done, width in images), images
    assert {"edge@2/heat.png", "edge@2/dft.png", "edge@2/diff-1.png", "edge@2/camera-0.png"} <= {s for s, _, _ in images}
    assert page.eval_on_selector_all("section.version", "s => s.map(x => x.id)") == ["v2", "v1"]
    with registry.Registry(site.parent / "reg", builtins=False) as reg:
        records = {r["version"]: r for r in reg.records(["team/edge@1", "team/edge@2"])}
        events = reg.history("team/edge")
    history = page.eval_on_selector_all("h2:text('History') + table tbody tr",
                                        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))")
    said = ["added team/edge@1", "added team/edge@2", "labelled team/edge@2 label=stable",
            "deprecated team/edge@1 reason=sign bug, use @2"]
    assert history == [[e["at"], e["by"], what] for e, what in zip(events, said)] and len(events) == 4
    assert {records[v]["provenance"]["author"] for v in (1, 2)} == {"ann", "bob"}  # the versions' own authors
    rows = page.eval_on_selector_all("h2:text('Versions') + table tbody tr",
                                     "rows => rows.map(r => r.cells[1].textContent)")
    assert rows == ["stable", "deprecated"]  # @2 carries the label, @1 is retired
    note = page.inner_text("#v1 .deprecated")
    assert "sign bug, use @2" in note and page.query_selector("#v2 .deprecated") is None
    assert page.query_selector("main > p.deprecated") is None  # @2 still stands: the name is not retired
    assert "stable" in page.inner_text("main > p:has(strong)")  # label -> version beside the latest
    page.screenshot(path=str(shots / "kernel.png"), full_page=True)
    multi = watched.open("k/lab/rgb.html")
    assert all(w > 0 for w in multi.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)"))
    watched.clean()


def test_labels_and_a_retired_name_show_on_the_index_and_its_page(watched: Watched) -> None:
    page = watched.open("index.html")
    assert page.inner_text("#kernels tr:has(a[href='k/team/edge.html']) td:first-child").split() == ["team/edge",
                                                                                                       "stable"]
    blur2 = page.inner_text("#kernels tr:has(a[href='k/team/blur2.html']) td:first-child")
    assert "deprecated" in blur2.split()  # its only version is retired
    page.select_option("#filter-label", "stable")
    assert watched.visible_names() == ["team/edge"]
    retired = watched.open("k/team/blur2.html")
    assert "too wide, use team/blur10" in retired.inner_text("main > p.deprecated")
    watched.clean()


def test_hostile_strings_render_as_text(watched: Watched, shots: Path) -> None:
    for path in ("index.html", "k/team/hostile.html"):
        page = watched.open(path)
        text = page.inner_text("main")
        assert HOSTILE["description"][:40] in text
        if path != "index.html":
            assert all(value in text for value in (HOSTILE["author"], HOSTILE["normalization"], *HOSTILE["references"]))
        assert page.eval_on_selector_all("main img[src=x], main iframe, main a[href^=javascript]", "e => e.length") == 0
        assert page.evaluate("document.scripts.length") == (1 if path == "index.html" else 0)
    page.screenshot(path=str(shots / "hostile.png"), full_page=True)
    watched.clean()


def test_without_chromium_ci_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KREG_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium anywhere on it
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true, so this is a failure"):
        chromium_path()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        chromium_path()
