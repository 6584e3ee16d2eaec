"""Typos in where the registry is are refused with the fix, never obeyed: a mistyped URL, an
endpoint the client cannot use, an endpoint that is not a storage service, an empty registry."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli

ROOT = Path(__file__).resolve().parents[1]

MISTYPED = [("s3:/kernels/team", "s3://kernels/team"), ("s3:kernels", "s3://kernels"),
            ("S3://kernels/team", "s3://kernels/team"), ("s3//kernels/team", "s3://kernels/team"),
            ("az:/box/p", "az://box/p"), ("AZ://box", "az://box"), ("az//box", "az://box"),
            ("gs:bucket/p", "gs://bucket/p"), ("GS://bucket", "gs://bucket")]


@pytest.mark.parametrize(("typed", "meant"), MISTYPED)
def test_a_mistyped_registry_url_is_refused_with_did_you_mean_and_nothing_is_written(
        typed: str, meant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--db", typed, "add", "team/x", "--values", "[[1, 2]]"])
    assert result.exit_code == 2, result.output
    assert f"did you mean {meant}?" in result.output
    monkeypatch.setenv("KREG_DB", typed)
    result = CliRunner().invoke(cli, ["add", "team/x", "--values", "[[1, 2]]"])
    assert result.exit_code == 2 and f"did you mean {meant}?" in result.output
    result = CliRunner().invoke(cli, ["copy", str(tmp_path / "nowhere"), typed])
    assert result.exit_code == 2 and f"did you mean {meant}?" in result.output
    for call in (lambda: registry.Registry(typed), lambda: registry.default_registry(typed),
                 lambda: registry.add("team/x", [[1.0, 2.0]])):
        with pytest.raises(registry.UnsafeFileError, match=f"did you mean {meant}"):
            call()
    assert os.listdir(tmp_path) == []  # no folder 's3:' or 's3' on this machine


def test_a_local_folder_with_a_colon_is_still_reachable_spelled_as_a_path(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--db", "./s3:x", "add", "team/x", "--values", "[[1, 2]]"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s3:x" / "index.json").exists()
    assert CliRunner().invoke(cli, ["--db", "s3/x", "list"]).exit_code == 0  # 's3/x' is a plain path


def _kreg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # a subprocess: the client's panic is printed by its Rust code, where CliRunner cannot see it
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "registry", *args], capture_output=True, text=True, env=full,
                          timeout=120)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8333", " http://127.0.0.1:8333", "http://127.0.0.1:8333 ",
                                      "http://127.0.0.1:8333/kernels", "localhost:8333"])
def test_an_endpoint_the_client_cannot_use_is_one_line_naming_the_variable(endpoint: str, tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "KREG_CACHE_DIR": str(tmp_path / "cache")}
    result = _kreg("--db", "s3://kernels/team", "list", env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: The environment variable AWS_ENDPOINT_URL ")
    assert "e.g. http://" in lines[0] and "panicked" not in result.stderr


class _WebPage(http.server.SimpleHTTPRequestHandler):
    """A web server, not a storage service: a 404 page for anything (as a console or proxy shows)."""

    def log_message(self, *args: object) -> None:
        pass


class _Console(http.server.BaseHTTPRequestHandler):
    """A web application that answers every path and verb with its page, 200 OK."""

    def _page(self) -> None:
        body = b"<!DOCTYPE html><html><body>Storage console</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _page

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=["404 page", "200 page"])
def web_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    (tmp_path / "www").mkdir()
    handler = (lambda *a: _WebPage(*a, directory=str(tmp_path / "www"))) if request.param == "404 page" else _Console
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("command", [["list"], ["show", "team/x"], ["fsck"], ["verify"],
                                     ["add", "team/x", "--values", "[[1, 2]]"]])
@pytest.mark.parametrize("cloud", ["s3", "az"])
def test_an_endpoint_that_answers_but_is_no_storage_service_says_so(
        command: list[str], cloud: str, web_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("AWS_", "AZURE_", "AZURITE_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("KREG_CACHE_BYTES", "0")
    if cloud == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", web_server)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        url, service = f"s3://kernels/{uuid.uuid4().hex[:12]}", "not an S3 service"
    else:
        monkeypatch.setenv("AZURE_STORAGE_USE_EMULATOR", "true")
        monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", web_server)
        url, service = f"az://kernels/{uuid.uuid4().hex[:12]}", "not an Azure Blob service"
    result = CliRunner().invoke(cli, ["--db", url, *command])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and lines[-1].startswith("Error: ") and service in lines[-1], result.output
    assert "fsck" not in lines[-1] and len(lines) == 1


def test_a_registry_that_holds_nothing_says_so_on_stderr(s3_url: str) -> None:
    result = CliRunner().invoke(cli, ["--db", s3_url, "list"])
    assert result.exit_code == 0
    assert f"No kernels at {s3_url} yet" in result.stderr and "No kernels at" not in result.stdout
    assert "sobel_x " in result.stdout  # the built-ins are still listed
    result = CliRunner().invoke(cli, ["--db", s3_url, "list", "sobel*"])
    assert f"No kernels at {s3_url} yet" in result.stderr
    registry.Registry(s3_url).add("team/x", [[1.0, 2.0]])
    for args in (["list"], ["list", "sobel*"]):
        result = CliRunner().invoke(cli, ["--db", s3_url, *args])
        assert result.exit_code == 0 and "No kernels at" not in result.stderr
