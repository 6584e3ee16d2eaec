"""What a registry on object storage says when it cannot be used: unreachable (what still works
offline) or without credentials (not a bucket policy)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

import registry
from registry.cli import cli


def _kreg(url: str, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--db", url, *args])


class _Relay:
    """A TCP relay to the server: the endpoint this machine knows, which can go away (the network
    down, as seen from here) while the server and this machine's cache stay as they are."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed: offline
            server = socket.create_connection(self.target)
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone would not, on Linux)
        except OSError:
            pass
        self.listener.close()
        for connection in self.open:
            try:
                connection.shutdown(socket.SHUT_RDWR)  # the client's pooled connections go too
            except OSError:
                pass


@pytest.fixture
def offline(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A registry with team/x@1, loaded once through a relay (so cached), then the relay gone."""
    host, port = urlsplit(os.environ["AWS_ENDPOINT_URL"]).hostname, urlsplit(os.environ["AWS_ENDPOINT_URL"]).port
    relay = _Relay((host or "127.0.0.1", port or 80))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
    reg = registry.Registry(s3_url)
    reg.add("team/x", [[1.0, 2.0]])
    reg.load("team/x@1")
    reg.close()
    relay.close()
    yield s3_url


@pytest.mark.parametrize("command", [["show", "team/x"], ["verify"], ["fsck"]])
def test_an_offline_read_never_says_nothing_was_committed_and_says_what_still_works(
        offline: str, command: list[str]) -> None:
    result = _kreg(offline, *command)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"Error: Cannot reach {offline}")
    assert "committed" not in lines[0]
    assert "name@v" in lines[0] and "KREG_FRESHNESS" in lines[0]


def test_offline_list_lists_the_built_ins_and_says_what_else_still_works(offline: str) -> None:
    result = _kreg(offline, "list")  # the built-ins ship in the package
    warning = [line for line in result.output.splitlines() if line.startswith("Warning:")]
    assert result.exit_code == 0 and "sobel_x" in result.output and "team/x" not in result.output
    assert len(warning) == 1 and f"Cannot reach {offline}" in warning[0] and "committed" not in warning[0]
    assert "name@v" in warning[0] and "KREG_FRESHNESS" in warning[0]


def test_offline_a_pinned_version_loaded_before_still_loads(offline: str) -> None:
    result = _kreg(offline, "show", "team/x@1")  # name@v: from the cache
    assert result.exit_code == 0 and result.output.startswith("team/x@1 ")


def test_offline_kreg_freshness_serves_the_last_index_seen(offline: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KREG_FRESHNESS", "3600")
    result = _kreg(offline, "show", "team/x")  # the last index seen, within the hour
    assert result.exit_code == 0 and result.output.startswith("team/x@1 ")


@pytest.mark.parametrize("command", [["add", "team/y", "--values", "[[3, 4]]"], ["rm", "team/x@1"]])
def test_an_offline_write_says_nothing_was_committed_once_and_no_offline_read_hint(
        offline: str, command: list[str]) -> None:
    result = _kreg(offline, *command)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"Error: Cannot reach {offline}")
    assert lines[0].lower().count("nothing was committed") == 1
    assert "KREG_FRESHNESS" not in lines[0]


@pytest.mark.parametrize("command", [["list"], ["add", "team/y", "--values", "[[3, 4]]"]])
def test_no_credentials_at_all_says_credentials_are_missing_not_a_policy(
        s3_url: str, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    registry.Registry(s3_url).add("team/x", [[1.0, 2.0]])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("KREG_CACHE_BYTES", "0")
    result = _kreg(s3_url, *command)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: No credentials for {s3_url}") and "AWS_ACCESS_KEY_ID" in lines[0]
    assert "policy" not in lines[0]


@pytest.mark.parametrize("url", ["s3://b/p", "az://c/p", "gs://b/p"])
def test_only_a_failed_credential_lookup_is_told_as_missing_credentials(url: str) -> None:
    # an instance's credentials come from the metadata service: a 403 with none in the environment
    # is still a denial (a managed identity's role), never "no credentials"
    from registry.store.cloud_errors import _translate

    lookup = ("Generic error: Error performing PUT http://169.254.169.254/latest/api/token in 1ms - Server "
              "returned non-2xx status code: 403 Forbidden: denied")
    assert str(_translate(RuntimeError(lookup), url, writing=False)).startswith(f"No credentials for {url}")
    denied = "status code: 403 Forbidden: <Code>AccessDenied</Code>"
    assert "denied access" in str(_translate(RuntimeError(denied), url, writing=False))
