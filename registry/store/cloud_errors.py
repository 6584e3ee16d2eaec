"""Object-store client errors as kreg's one-line messages: what happened, in the registry's cloud's words.

Every message names the registry's URL and what to check there (the bucket or container, the
credentials' variables, the endpoint, who grants access, the cloud's word for throttling) and
never a credential: the client's own report, which may hold request URLs, is not repeated.
"""

from __future__ import annotations

import re
import time
from typing import Any

from .._exceptions import KregError, RemoteError, StoreWriteError, UnsafeFileError
from .backend import ObjectMissing


def shown_url(url: str) -> str:
    """``url`` without its query or fragment, which may hold a token: the form a message may print."""
    return re.split(r"[?#]", url, maxsplit=1)[0]


def _check_plain(url: str) -> None:
    """Refuse what the client would read as other than a path: a query or fragment is dropped (and
    may be a SAS token, never to be printed) and ``%`` is an escape, so the registry would live
    under another prefix than the one named (``p?x`` at ``p``, ``a%20b`` at ``a b``)."""
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if ":" in userinfo or (at and scheme not in ("abfs", "abfss")):  # abfss://CONTAINER@ACCOUNT... names no secret
        raise UnsafeFileError(f"{scheme}://...@{host}{slash}{path}: a registry URL carries no user or key "
                              "before '@' (not shown: it may be a secret, and the client would ignore it). Give "
                              "credentials in the environment and the registry as scheme://BUCKET/PREFIX.")
    head = shown_url(url)
    if head != url:
        raise UnsafeFileError(f"{head}...: a registry URL has no query or fragment ('?', '#'; what follows is not "
                              "shown: it may hold a token). Give credentials in the environment (e.g. "
                              "AZURE_STORAGE_SAS_KEY) and the registry as scheme://BUCKET/PREFIX.")
    if "%" in url:
        raise UnsafeFileError(f"{url}: a '%' in a registry URL would be read as an escape ('a%20b' as 'a b'), "
                              "so the registry would live elsewhere. Name the prefix without '%'.")
    # One trailing '/' names the same prefix; '.', '..' and empty segments would be resolved (or
    # collapsed) on the way to the store: 's3://b/dd/../../etc' wrote the registry under 'etc/'.
    top, sep, below = rest.removesuffix("/").partition("/")
    if top in (".", "..") or (sep and any(part in ("", ".", "..") for part in below.split("/"))):
        raise UnsafeFileError(f"{url}: a registry URL's path has no '.', '..' or empty ('//') segment; the store "
                              "would resolve it, so the registry would live elsewhere than the URL says. Name "
                              "the prefix plainly, e.g. s3://BUCKET/team/kernels.")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


#: Azure's answers to a write of a blob someone holds a lease on (a 412 no replay can win).
_LEASED = re.compile(r"LeaseIdMissing|LeaseIdMismatch|LeaseLost|There is currently a lease on the blob")
#: A missing bucket (S3, GCS) or container (Azure).
_NO_BUCKET = re.compile(r"NoSuchBucket|ContainerNotFound")
#: Credentials refused: S3's codes, Azure's (a 403 that is not about permissions), GCS's 401.
_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                    "AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation",
                    "failed to authenticate")
#: What to check, by cloud: the bucket's word and how to create it, the credentials, the
#: endpoint, who grants access, and the cloud's word for throttling.
_HINTS = {
    "s3": ("bucket", "aws s3 mb s3://{bucket}", "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or your profile",
           "AWS_ENDPOINT_URL", "the bucket policy", "503 SlowDown"),
    "gs": ("bucket", "gcloud storage buckets create gs://{bucket}",
           "GOOGLE_SERVICE_ACCOUNT (or GOOGLE_APPLICATION_CREDENTIALS)", "storage.googleapis.com",
           "the bucket's IAM roles", "429 Too Many Requests"),
    "az": ("container", "az storage container create --name {bucket}",
           "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY",
           "AZURE_STORAGE_ACCOUNT_NAME (or AZURITE_BLOB_STORAGE_URL)",
           "the container's role assignments or the SAS permissions", "503 ServerBusy"),
}


def _hints(url: str) -> tuple[str, ...]:
    scheme, _, rest = url.partition("://")
    cloud = {"s3a": "s3", "azure": "az", "abfs": "az", "abfss": "az"}.get(scheme, scheme)
    word, create, *others = _HINTS.get(cloud, _HINTS["s3"])
    return (word, create.format(bucket=rest.partition("/")[0]), *others)


def _refused(error: Exception) -> Exception:
    """Mark a refusal the server answered: whatever the request was, it was not carried out (a
    commit refused so is known not to have landed, and its writer cleans up)."""
    error.committed = False  # type: ignore[attr-defined]
    return error


def _unanswered(error: Exception) -> Exception:
    """Mark a request that got no whole answer (a timeout, a dropped connection): it may or may
    not have been carried out, and one that can land only once may be sent again."""
    error.unanswered = True  # type: ignore[attr-defined]
    return error


def _translate(exc: BaseException, url: str, *, writing: bool, committing: bool = False, key: str = "",
               limits: tuple[float, float] | None = None, elapsed: float | None = None) -> Exception:
    """One actionable error for a failed request, naming the registry, never a credential. For the
    commit's own request (``committing``) a failure without an answer does not say "nothing was
    committed": the PUT may have landed. A wait given up names what was awaited (on ``key``)
    and the limits (request, operation) that ended it."""
    import obstore.exceptions as oe

    text = str(exc)
    foreign = _foreign_answer(text, url)
    if foreign is not None:
        return foreign
    if re.search(r"(?:ETag|Last-Modified) [Hh]eader missing|Missing(?:LastModified|Etag)\b", text):
        # every S3 and Azure answer to a read carries both: an answer without them is no store's
        return not_a_store(url, "without the ETag and Last-Modified headers every storage service sends")
    # A put that failed committed nothing; a read has nothing to commit (a write's reads are told
    # so by the registry, see ``offline_read``); a commit cut off may have landed.
    nothing = "; nothing was committed" if writing and not committing else ""
    word, create, credentials, endpoint, grants, busy = _hints(url)
    if any(host in text for host in METADATA_HOSTS):
        # the client looked for credentials on the cloud's metadata service, as it does when the
        # environment names none, and found none there: no request reached the store yet
        return _refused(RemoteError(f"No credentials for {url}: the environment names none (and no instance "
                                    f"role answered). Set {credentials}."))
    waited = _awaited(text)
    if waited is not None:
        where = f"{url}/{key}" if key else url
        after = f" after {elapsed:.0f} s" if elapsed is not None and waited != _CUT else ""
        bounds = f"{limits[0]:g} s a request, {limits[1]:g} s with its retries; " if limits else ""
        return _unanswered(offline_read(RemoteError(
            f"Gave up on {where}{after}: {waited} (limits: {bounds}set KREG_REQUEST_TIMEOUT, KREG_OPERATION_TIMEOUT). "
            f"Check the endpoint ({endpoint}) and the network, or raise the limits{nothing}."), writing or committing))
    if _NO_BUCKET.search(text):
        return _refused(RemoteError(f"The {word} of {url} does not exist. Create it (e.g. '{create}'), or fix "
                                    "the URL."))
    if any(code in text for code in _BAD_CREDENTIALS) or isinstance(exc, oe.UnauthenticatedError):
        return _refused(RemoteError(f"{url} refused the credentials (wrong or expired key, secret or token). "
                                    f"Check {credentials}."))
    if isinstance(exc, oe.PermissionDeniedError) or "AccessDenied" in text or "403 Forbidden" in text:
        if writing:
            return _refused(StoreWriteError(f"{url} is read-only for these credentials (access denied on a "
                                            "write). Nothing was committed; use credentials allowed to write, "
                                            "or only read."))
        return _refused(RemoteError(f"{url} denied access to these credentials. Check {grants} or your keys."))
    # A connection failure first: its report holds durations and counts ("1.503s") that a bare
    # "503" would take for a status.
    if any(word in text for word in ("error sending request", "onnection refused", "dns error", "timed out",
                                     "operation timed out", "onnection reset", "tcp connect", "body error")):
        return _unanswered(offline_read(RemoteError(f"Cannot reach {url} (connection failed or timed out). Check "
                                                    f"the endpoint ({endpoint}) and the network{nothing}."),
                                        writing or committing))
    if any(code in text for code in ("SlowDown", "ServerBusy")) or re.search(r"status(?: code)?:? (?:429|503)\b",
                                                                            text):
        return RemoteError(f"{url} kept throttling requests ({busy}) after the retries{nothing}. Try again later.")
    return RemoteError(f"A request to {url} failed: {_status(text)}. Try again; 'kreg fsck' checks the registry.")


#: A response whose connection closed before its body was whole.
_CUT = "the connection closed before the whole response arrived, after the retries"


def _awaited(text: str) -> str | None:
    """What a request that got no whole answer was waiting for, from the client's report (None
    when it is neither a timeout nor a transfer cut short)."""
    if re.search(r"IncompleteBody|UnexpectedEof|end of file before message length|connection closed before message "
                 r"completed", text):
        return _CUT
    if not re.search(r"TimedOut|kind: Timeout|timed out|deadline has elapsed", text):
        return None
    if re.search(r"kind: Body|body error", text):
        return "waiting for the rest of the response body (a stalled transfer)"
    if "connect" in text:
        return "waiting for a connection to the server"
    return "waiting for the server's answer"


#: The metadata services where the clients look for an instance's credentials (AWS, Azure, GCP).
METADATA_HOSTS = ("169.254.169.254", "metadata.google.internal")
#: Said after a read that found the store unreachable: what still works on this machine.
OFFLINE_HINT = (" Meanwhile, versions this machine loaded before still load pinned (name@v, from its cache), and "
                "KREG_FRESHNESS=SECONDS lets a bare name use the last index this machine saw within that time.")


def offline_read(error: RemoteError, writing: bool) -> RemoteError:
    """``error`` (the store could not be reached) with, for a read, what still works offline; the
    message without it is kept for a write that fails on one of its reads (see ``Registry``)."""
    error.unreached = str(error)  # type: ignore[attr-defined]
    error.unreachable = True  # type: ignore[attr-defined]  # kreg list still lists the built-ins
    if not writing:
        error.args = (f"{error}{OFFLINE_HINT}",)
    return error


#: A failed request's status and the start of the body the server sent with it.
_ANSWER = re.compile(r"status code: (\d{3})([^:]*):\s*(\S[^\n]{0,80})?")


def _foreign_answer(text: str, url: str) -> Exception | None:
    """An error when the server answered a request as no S3 or Azure service does: an S3 or Azure
    error is an XML document (or nothing, for a HEAD), a web server's is an HTML page. An
    endpoint set to a web server would otherwise look like an empty registry, or a damaged one."""
    answer = _ANSWER.search(text)
    scheme = url.partition("://")[0]
    if answer is None or scheme == "gs" or not answer.group(3):
        return None
    status, body = int(answer.group(1)), answer.group(3).lstrip().lower()
    # only a web page: a proxy's 502/503 page is a passing outage, and some services answer an
    # error with a bare <Code> or with nothing
    if not (400 <= status < 500 or status == 501) or not body.startswith(("<!doctype html", "<html")):
        return None
    return not_a_store(url, f"{answer.group(1)}{answer.group(2).rstrip()} with a web page")


def not_a_store(url: str, answer: str) -> RemoteError:
    """The error for an endpoint that answered as no storage service does (``answer`` says how)."""
    scheme = url.partition("://")[0]
    service = "Azure Blob service" if scheme in ("az", "azure", "abfs", "abfss") else "S3 service"
    return _refused(RemoteError(f"The endpoint of {url} answered {answer}: it is not an {service}. Check "
                                f"{_hints(url)[3]}: it must name the storage API itself, not a web page or console."))


def _panic(exc: BaseException, url: str) -> BaseException:
    """The client's Rust code panicked (``PanicException``, a BaseException): seen when a setting
    holds a character no HTTP header may carry. Anything else (Ctrl-C, exit) is returned as it was."""
    if type(exc).__name__ != "PanicException":
        return exc
    return RemoteError(f"The client for {url} stopped on a setting it cannot send: a key, token or secret in the "
                       f"environment holds a character no HTTP header may (a newline?). Check {_hints(url)[2]}.")


def _status(text: str) -> str:
    """The HTTP status and error code of a failed request, without the rest of the client's report."""
    status = re.search(r"status code: (\d{3}[^:<]*)", text)
    code = re.search(r"<Code>([A-Za-z]+)</Code>", text)
    parts = [p for p in (status and status.group(1).strip(), code and code.group(1)) if p]
    return ", ".join(parts) or "an unexpected error"


__all__: list[str] = []


def translated(call: Any, url: str, key: str, *, writing: bool = False, committing: bool = False,
               limits: tuple[float, float] | None = None) -> Any:
    """``call()``, one request of the client to the registry at ``url``, with the client's errors
    turned into kreg's (never with secrets); a missing ``key`` is :class:`ObjectMissing`."""
    import obstore.exceptions as oe

    started = time.monotonic()
    try:
        return call()
    except (oe.NotFoundError, FileNotFoundError) as exc:
        if _NO_BUCKET.search(str(exc)) or _foreign_answer(str(exc), url) is not None:
            raise _translate(exc, url, writing=writing) from None
        raise ObjectMissing(f"{url}/{key} does not exist.") from None
    except (oe.AlreadyExistsError, oe.PreconditionError, oe.NotModifiedError):
        raise
    except KregError:
        raise  # already kreg's: the client could not be configured (a malformed key, a missing boto3)
    except Exception as exc:  # noqa: BLE001 - every other client error is turned into one message
        raise _translate(exc, url, writing=writing, committing=committing, key=key, limits=limits,
                         elapsed=time.monotonic() - started) from None
    except BaseException as exc:  # noqa: BLE001 - a Rust panic of the client (others re-raised)
        raise _panic(exc, url) from None
