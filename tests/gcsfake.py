"""A stand-in for Google Cloud Storage's XML API, for one question only: does kreg's client
send GCS's conditions (``x-goog-if-generation-match``) on its creates and its commits?

No GCS emulator on the package index answers that: fake-gcs-server has no XML API (the one the
client speaks) and gcp-storage-emulator ignores the preconditions. So this is a mock, and it is
used only for what GCS documents about preconditions: a PUT with
``x-goog-if-generation-match: 0`` fails with 412 if the object exists, one with ``N`` fails with
412 unless the object's generation is ``N``; every write gets a new generation. Races are tested
on SeaweedFS and Azurite, never here.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape


class _State:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.objects: dict[str, tuple[bytes, int]] = {}  # key -> (bytes, generation)
        self.next_generation = 1
        self.lock = threading.Lock()
        self.conditions: list[tuple[str, str | None]] = []  # (key, x-goog-if-generation-match) of each PUT


class _Handler(BaseHTTPRequestHandler):
    state: _State

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _key(self) -> tuple[str | None, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        bucket, _, key = parts.path.lstrip("/").partition("/")
        if unquote(bucket) != self.state.bucket:
            return None, {}
        return unquote(key), parse_qs(parts.query)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        self._reply(status, f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code></Error>".encode())

    @staticmethod
    def _meta(data: bytes, generation: int) -> dict[str, str]:
        return {"ETag": f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"',
                "x-goog-generation": str(generation), "Last-Modified": formatdate(usegmt=True)}

    def do_PUT(self) -> None:
        key, _ = self._key()
        if key is None:
            return self._error(404, "NoSuchBucket")
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        condition = self.headers.get("x-goog-if-generation-match")
        with self.state.lock:
            self.state.conditions.append((key, condition))
            current = self.state.objects.get(key)
            if condition is not None and int(condition) != (current[1] if current else 0):
                return self._error(412, "PreconditionFailed")
            generation = self.state.next_generation
            self.state.next_generation += 1
            self.state.objects[key] = (data, generation)
        self._reply(200, headers=self._meta(data, generation))

    def do_GET(self) -> None:
        key, query = self._key()
        if key is None:
            return self._error(404, "NoSuchBucket")
        if not key:
            return self._list(query)
        with self.state.lock:
            held = self.state.objects.get(key)
        if held is None:
            return self._error(404, "NoSuchKey")
        data, generation = held
        meta = self._meta(data, generation)
        if self.headers.get("If-None-Match") == meta["ETag"]:
            return self._reply(304, headers=meta)
        span = self.headers.get("Range")
        if span:
            start, _, end = span.removeprefix("bytes=").partition("-")
            first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
            meta["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return self._reply(206, data[first:last + 1], meta)
        self._reply(200, data, meta)

    do_HEAD = do_GET

    def do_DELETE(self) -> None:
        key, _ = self._key()
        with self.state.lock:
            found = self.state.objects.pop(key or "", None)
        self._reply(204) if found is not None else self._error(404, "NoSuchKey")

    def _list(self, query: dict[str, list[str]]) -> None:
        prefix = query.get("prefix", [""])[0]
        after = query.get("start-after", [""])[0]
        with self.state.lock:
            keys = sorted(k for k in self.state.objects if k.startswith(prefix) and k > after)
            items = [(k, *self.state.objects[k]) for k in keys]
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>{len(d)}</Size><Generation>{g}</Generation>"
            f"<LastModified>2026-01-01T00:00:00.000Z</LastModified>"
            f"<ETag>\"{hashlib.md5(d, usedforsecurity=False).hexdigest()}\"</ETag></Contents>"
            for k, d, g in items)
        body = (f"<?xml version='1.0' encoding='UTF-8'?><ListBucketResult><Name>{self.state.bucket}</Name>"
                f"<Prefix>{escape(prefix)}</Prefix><KeyCount>{len(items)}</KeyCount><IsTruncated>false</IsTruncated>"
                f"{contents}</ListBucketResult>")
        self._reply(200, body.encode(), {"Content-Type": "application/xml"})


@contextmanager
def fake_gcs(bucket: str, directory: Path) -> Iterator[tuple[_State, dict[str, str]]]:
    """Serve ``bucket`` on a free port; yields its state and the client environment (a service
    account file naming the server's URL, with OAuth off, as the client's own tests do)."""
    state = _State(bucket)
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    account = directory / "service-account.json"
    account.write_text(json.dumps({"gcs_base_url": f"http://127.0.0.1:{server.server_port}", "disable_oauth": True,
                                   "client_email": "", "private_key": "", "private_key_id": ""}))
    try:
        yield state, {"GOOGLE_SERVICE_ACCOUNT": str(account)}
    finally:
        server.shutdown()
        server.server_close()
