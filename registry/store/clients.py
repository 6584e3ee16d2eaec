"""The object-store client of a registry URL, configured from each cloud's standard environment,
and the compare-and-swap token of its root."""

from __future__ import annotations

import hashlib
import math
import os
from datetime import timedelta
from typing import Any

from .._exceptions import RemoteError
from .cloud_errors import _first_line, _hints, _panic

#: Environment variables bounding every wait on an object store, in seconds: one request (from
#: connecting to the last byte of its answer), and one operation (a request with all its retries).
REQUEST_TIMEOUT_ENV, OPERATION_TIMEOUT_ENV = "KREG_REQUEST_TIMEOUT", "KREG_OPERATION_TIMEOUT"
#: Their defaults: a stalled or cut transfer ends in a clear error well within a minute (a
#: pinned load whose receipt cannot be read tries the index once: two operations, 50 s at most).
REQUEST_TIMEOUT, OPERATION_TIMEOUT = 10.0, 25.0
#: Longest wait for a connection, and longest pause between two retries (seconds).
CONNECT_TIMEOUT, MAX_BACKOFF = 5.0, 2.0


def wait_limits(request: float | None = None, operation: float | None = None) -> tuple[float, float]:
    """The request and operation limits in seconds: those given, else the environment's, else the
    defaults. A request never outlasts its operation."""

    def seconds(given: float | None, variable: str, default: float) -> float:
        text = os.environ.get(variable, "").strip() if given is None else str(given)
        if not text:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            shown = f"{variable}={text[:40]!r}" if given is None else f"a limit of {text[:40]} s"
            raise RemoteError(f"{shown} is not a number of seconds above 0. Set it to one (e.g. {default:g}), "
                              "or unset it for the default.")
        return value

    limit = seconds(operation, OPERATION_TIMEOUT_ENV, OPERATION_TIMEOUT)
    return min(seconds(request, REQUEST_TIMEOUT_ENV, REQUEST_TIMEOUT), limit), limit


def make_store(scheme: str, bucket: str, prefix: str, retries: int, limits: tuple[float, float], url: str) -> Any:
    """The obstore client for ``url``, configured from the cloud's standard environment, its every
    request bounded by ``limits`` (see :func:`wait_limits`)."""
    from obstore.store import from_url

    request, operation = limits
    client: dict[str, Any] = {"connect_timeout": timedelta(seconds=min(CONNECT_TIMEOUT, request)),
                              "timeout": timedelta(seconds=request)}
    # The client starts no retry past ``retry_timeout``, then pauses at most MAX_BACKOFF and the
    # retry takes at most ``request``: a request with its retries ends within ``operation``.
    retry = {"max_retries": retries, "retry_timeout": timedelta(seconds=max(0.0, operation - request - MAX_BACKOFF)),
             "backoff": {"init_backoff": timedelta(milliseconds=100),
                         "max_backoff": timedelta(seconds=MAX_BACKOFF), "base": 2}}
    kwargs: dict[str, Any] = {}
    # The client panics (a Rust panic, with a backtrace on stderr) on a header value it cannot
    # send: name the setting instead, never its value.
    for variable, value in os.environ.items():
        if variable.startswith(("AWS_", "AZURE_", "GOOGLE_")) and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise RemoteError(f"Cannot configure the client for {url}: {variable} holds a control character (a "
                              "newline?) that no request may carry. Set it again without it.")
    if scheme in ("s3", "s3a"):
        endpoint = s3_endpoint()
        if endpoint:
            check_endpoint(_S3_ENDPOINT[0] if os.environ.get(_S3_ENDPOINT[0]) else _S3_ENDPOINT[1], endpoint,
                           path=False)
            # A local server (SeaweedFS, MinIO) is plain HTTP and addressed by path, not by
            # virtual host; AWS_ENDPOINT_URL alone must be enough to reach it.
            client["allow_http"] = endpoint.startswith("http://")
            kwargs["endpoint"] = endpoint
            kwargs.setdefault("virtual_hosted_style_request", False)
            if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
                kwargs["region"] = "us-east-1"
        provider = _profile_credentials()
        if provider is not None:
            kwargs["credential_provider"] = provider
    elif scheme in ("az", "azure", "abfs", "abfss"):
        for variable in ("AZURITE_BLOB_STORAGE_URL", "AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT"):
            if os.environ.get(variable):
                check_endpoint(variable, os.environ[variable], path=True)
    elif scheme == "gs" and gcs_base_url().startswith("http://"):
        client["allow_http"] = True  # a local GCS stand-in named by the service-account file, as for S3
    try:
        return from_url(f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}",
                        client_options=client, retry_config=retry, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a bad configuration value names no secret
        raise RemoteError(f"Cannot configure the client for {url}: {_first_line(exc).rstrip('.')}. Check "
                          f"{_hints(url)[2]}.") from None
    except BaseException as exc:  # noqa: BLE001 - a Rust panic of the client (others re-raised)
        raise _panic(exc, url) from None


def cache_space(scheme: str, url: str) -> str:
    """What the local cache files this registry under: its URL and the server it is on. The URL
    alone is not enough: the same ``s3://bucket/p`` on two endpoints (two MinIOs), or the same
    ``az://container/p`` in two storage accounts, are two registries."""
    env = os.environ.get
    if scheme in ("s3", "s3a"):
        where = s3_endpoint() or "aws"
    elif scheme == "gs":
        where = gcs_base_url() or "gcs"
    elif (env("AZURE_STORAGE_USE_EMULATOR") or "").lower() in ("1", "true"):
        where = env("AZURITE_BLOB_STORAGE_URL") or "azurite"
    else:
        account = env("AZURE_STORAGE_ACCOUNT_NAME") or env("AZURE_STORAGE_ACCOUNT") or ""
        where = f"{account} {env('AZURE_STORAGE_ENDPOINT') or env('AZURE_ENDPOINT') or ''}"
    return f"{url}\n{where}"


#: The variables naming an S3 endpoint, the first one winning (as in the AWS tools).
_S3_ENDPOINT = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def s3_endpoint() -> str | None:
    """The S3 endpoint the environment names (a local server), or None for AWS itself."""
    return os.environ.get(_S3_ENDPOINT[0]) or os.environ.get(_S3_ENDPOINT[1])


def check_endpoint(variable: str, value: str, *, path: bool) -> None:
    """Refuse an endpoint the client cannot use, naming the variable: without a scheme or with a
    blank the client panics (a Rust backtrace of 130 lines), and a path after an S3 host would
    put every key under it. ``path`` allows one (an Azure endpoint may name its account so)."""
    from urllib.parse import urlsplit

    from .._exceptions import ConfigError

    problem = ""
    if value != value.strip() or any(c.isspace() for c in value):
        problem = "holds a blank (a space, tab or newline)"
    else:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - a port that is not a number raises here
        except ValueError:
            parts, problem = None, "is not a URL"
        if parts is not None and not problem:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problem = "has no http:// or https:// before the host"
            elif parts.username is not None or parts.password is not None:
                problem = "carries a user or key before '@' (give credentials in their own variables)"
            elif parts.query or parts.fragment or (not path and parts.path not in ("", "/")):
                problem = "has a path, query or fragment after the host"
    if problem:
        example = f"http://{value.strip()}" if "://" not in value and value.strip() else "http://127.0.0.1:8333"
        raise ConfigError(f"The environment variable {variable} {problem}; the client cannot use it. Set it to "
                          f"the server alone, e.g. {example} (or https://HOST for TLS).")


def gcs_base_url() -> str:
    """The ``gcs_base_url`` of the service-account file the client will read, if any (it points
    the client at a local server; real GCS is always HTTPS)."""
    import json

    path = os.environ.get("GOOGLE_SERVICE_ACCOUNT") or os.environ.get("GOOGLE_SERVICE_ACCOUNT_PATH")
    try:
        with open(path or "", encoding="utf-8") as handle:
            url = json.load(handle).get("gcs_base_url", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return url if isinstance(url, str) else ""


def _profile_credentials() -> Any:
    """Credentials from an AWS profile (``AWS_PROFILE``, ``~/.aws/config``) through boto3, when the
    environment holds no keys of its own; ``None`` lets the client read the environment."""
    if os.environ.get("AWS_ACCESS_KEY_ID") or not os.environ.get("AWS_PROFILE"):
        return None
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        from .._exceptions import MissingDependencyError

        raise MissingDependencyError("AWS_PROFILE is set: reading AWS profiles needs boto3 (pip install boto3), "
                                     "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead.") from None
    return Boto3CredentialProvider(boto3.Session(profile_name=os.environ["AWS_PROFILE"]))


def token_of(meta: Any) -> str:
    """The root's compare-and-swap token: its ETag, and its generation where the store has one.
    GCS conditions an update on the generation (``x-goog-if-generation-match``), not the ETag:
    without it the client refuses the update ("missing version")."""
    etag, version = meta["e_tag"], meta.get("version")
    return f"{etag}\t{version}" if version else str(etag)


def etag_of(token: str) -> str:
    return token.partition("\t")[0]


def update_mode(token: str) -> dict[str, str]:
    """``If-Match`` on the ETag (S3, Azure), with the generation for GCS when the token has one."""
    etag, _, version = token.partition("\t")
    return {"e_tag": etag, "version": version} if version else {"e_tag": etag}


def etag_matches(data: bytes, etag: str | None) -> bool:
    """False when the ETag looks like an MD5 (single-part S3 uploads) and the bytes do not hash to it."""
    tag = (etag or "").strip('"')
    if len(tag) == 32 and all(c in "0123456789abcdef" for c in tag):
        return hashlib.md5(data, usedforsecurity=False).hexdigest() == tag
    return True
