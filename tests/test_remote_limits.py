"""Every wait on an object store is bounded: a stalled or cut response body ends in a one-line
error naming what was awaited and the limits, within those limits (KREG_REQUEST_TIMEOUT,
KREG_OPERATION_TIMEOUT). A TCP proxy in front of the real SeaweedFS stalls or cuts the bodies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from faultproxy import FaultProxy

import registry
from registry.cli import cli

#: The limits the tests set (seconds): one request, one request with its retries.
REQUEST, OPERATION = 1.0, 2.0


@pytest.fixture
def proxied(s3_server: Any, s3_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FaultProxy]]:
    """A registry holding k@1, reached through a fault proxy, with the limits set low."""
    registry.Registry(s3_url, builtins=False).add("k", [[1.0, 2.0]])
    with FaultProxy(s3_server.ports["s3.port"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("KREG_REQUEST_TIMEOUT", str(REQUEST))
        monkeypatch.setenv("KREG_OPERATION_TIMEOUT", str(OPERATION))
        yield s3_url, proxy


def _within(seconds: float, action: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Run ``action`` in a thread; fail if it has not ended after ``seconds``. Returns how long it
    took and what it raised."""
    raised: list[BaseException | None] = [None]

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised[0] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return time.monotonic() - started, raised[0]


@pytest.mark.parametrize("mode", ["stall", "cut"])
def test_a_stalled_or_cut_body_ends_a_pinned_load_within_the_limits(proxied: tuple[str, FaultProxy],
                                                                    mode: str) -> None:
    url, proxy = proxied
    proxy.mode = mode
    # A pinned load reads the receipt, then (it failing) the index: two operations at most.
    took, error = _within(2 * OPERATION + 2, lambda: registry.Registry(url, builtins=False).load("k@1"))
    assert proxy.faults >= 1 and isinstance(error, registry.RemoteError), repr(error)
    message = str(error)
    assert "\n" not in message and message.startswith(f"Gave up on {url}/"), message
    assert "KREG_REQUEST_TIMEOUT" in message and "KREG_OPERATION_TIMEOUT" in message
    awaited = "the rest of the response body (a stalled transfer)" if mode == "stall" else "closed before the whole"
    assert awaited in message, message
    if mode == "stall":
        assert took >= REQUEST  # it did wait, for the request's limit


def test_an_add_through_a_stalled_server_gives_up_within_the_limits(proxied: tuple[str, FaultProxy],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url, proxy = proxied
    proxy.mode = "stall"
    _, error = _within(3 * OPERATION + 2, lambda: registry.Registry(url, builtins=False).add("k", [[3.0, 4.0]]))
    assert isinstance(error, registry.RemoteError) and "Gave up on" in str(error), repr(error)
    proxy.mode = "pass"
    assert [i.ref for i in registry.Registry(url, builtins=False).list_kernels(all_versions=True)] == ["k@1"]


def test_the_default_limits_end_any_wait_within_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    # The client starts no retry after retry_timeout, pauses at most max_backoff, and a request
    # takes at most timeout: one operation ends within the operation limit, and a pinned load
    # (the receipt, then the index) within two.
    from registry.store.clients import MAX_BACKOFF, make_store, wait_limits

    monkeypatch.delenv("KREG_REQUEST_TIMEOUT", raising=False)
    monkeypatch.delenv("KREG_OPERATION_TIMEOUT", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    request, operation = wait_limits()
    store = make_store("s3", "b", "p", 4, (request, operation), "s3://b/p")
    timeout = float(store.client_options["timeout"].rstrip("s"))
    retry = store.retry_config
    assert timeout == request and retry["backoff"]["max_backoff"] == timedelta(seconds=MAX_BACKOFF)
    assert retry["retry_timeout"].total_seconds() + MAX_BACKOFF + timeout <= operation
    assert 2 * operation < 60


@pytest.mark.parametrize(("variable", "value"), [("KREG_REQUEST_TIMEOUT", "soon"), ("KREG_OPERATION_TIMEOUT", "-1"),
                                                  ("KREG_OPERATION_TIMEOUT", "inf")])
def test_a_limit_that_is_not_a_number_of_seconds_is_one_line_naming_the_variable(
        variable: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    result = CliRunner().invoke(cli, ["--db", "s3://b/p", "list"])
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith(f"Error: {variable}="), result.output
