"""A real Azure Blob Storage API for the tests: Azurite (``tests/azurite``, installed by ``make test``).

Azurite is Microsoft's emulator of the Blob service. It runs here on a free port on 127.0.0.1
with its data in a temporary directory, and is stopped by its process id. Its conditional PUTs
are atomic (measured before it was adopted: 100 rounds of 16 racing ``If-None-Match: *``
creates, each with exactly one winner; 16 threads x 25 ``If-Match`` increments ended at 400).

The client reaches it with ``AZURE_STORAGE_USE_EMULATOR=true`` and ``AZURITE_BLOB_STORAGE_URL``,
Azure's own emulator settings: the well-known development account (``devstoreaccount1``),
whose key is public (Microsoft's documentation prints it), so nothing secret is involved.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from s3server import ServerProcess, _free_ports

CONTAINER = "kreg-test"
ACCOUNT = "devstoreaccount1"
#: The development account's key, the same in every Azurite (published by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_HERE = Path(__file__).parent / "azurite"


def azurite_binary() -> str | None:
    """``azurite-blob`` as ``make test`` installs it (``npm ci`` in tests/azurite), else on PATH."""
    here = _HERE / "node_modules" / ".bin" / "azurite-blob"
    return str(here) if here.exists() else shutil.which("azurite-blob")


def sign(verb: str, path: str, query: dict[str, str], headers: dict[str, str]) -> str:
    """The ``Authorization`` header of a Shared Key request by the development account."""
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-ms-"))
    canonical_resource = f"/{ACCOUNT}{path}" + "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    length = headers.get("Content-Length", "")
    # VERB, then Content-Encoding, -Language, -Length, -MD5, -Type, Date, If-Modified-Since,
    # If-Match, If-None-Match, If-Unmodified-Since, Range, one line each (Shared Key, version 2009+).
    fields = [verb, "", "", "" if length == "0" else length, "", "", "", "", "", "", "", ""]
    text = "\n".join(fields) + "\n" + canonical_headers + canonical_resource
    digest = hmac.new(base64.b64decode(ACCOUNT_KEY), text.encode(), hashlib.sha256).digest()
    return f"SharedKey {ACCOUNT}:{base64.b64encode(digest).decode()}"


def account_sas(permissions: str) -> str:
    """An account SAS of the development account for blobs, with ``permissions`` (``"rl"``: read
    and list only), as the query string Azure's tools print (``AZURE_STORAGE_SAS_KEY``)."""
    version, expiry = "2020-12-06", "2099-01-01T00:00:00Z"
    # Account SAS, version 2020-12-06: account, permissions, services, resource types, start,
    # expiry, IP, protocols, version, encryption scope, one line each.
    text = "\n".join([ACCOUNT, permissions, "b", "sco", "", expiry, "", "https,http", version, ""]) + "\n"
    signature = base64.b64encode(hmac.new(base64.b64decode(ACCOUNT_KEY), text.encode(), hashlib.sha256).digest())
    return urllib.parse.urlencode({"sv": version, "ss": "b", "srt": "sco", "sp": permissions, "se": expiry,
                                   "spr": "https,http", "sig": signature.decode()})


class AzuriteServer(ServerProcess):
    """One ``azurite-blob`` process; :meth:`start` waits until it answers and creates the container."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_ports(1)[0]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def env(self) -> dict[str, str]:
        """The client environment for this server: Azure's emulator switch and its address."""
        return {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{self.port}"}

    def start(self, timeout: float = 60.0) -> None:
        binary = azurite_binary()
        if binary is None:
            raise RuntimeError("The Azure tests need Azurite: make test installs it (npm ci --prefix tests/azurite).")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(self.data_dir),
                "--skipApiVersionCheck", "--disableTelemetry", "--silent"]
        log = open(self.data_dir / "azurite.log", "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.process.returncode}; see {self.data_dir}/azurite.log")
            try:
                self.create_container(CONTAINER)
                return
            except urllib.error.HTTPError as exc:
                if exc.code == 409:  # ContainerAlreadyExists (a restart on the same data)
                    return
                last = exc
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Azurite did not answer within {timeout:g} s ({last}); see {self.data_dir}/azurite.log")

    def create_container(self, name: str) -> None:
        headers = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": "2021-08-06",
                   "Content-Length": "0"}
        query = {"restype": "container"}
        headers["Authorization"] = sign("PUT", f"/{ACCOUNT}/{name}", query, headers)
        request = urllib.request.Request(f"{self.endpoint}/{name}?restype=container", method="PUT", headers=headers)
        urllib.request.urlopen(request, timeout=2).close()

    def restart(self) -> None:
        """Stop and start again on the same port and data (Azurite keeps its data in
        ``--location`` across a stop: checked before the restart test relied on it)."""
        self.stop()
        self.start()

    def lease(self, blob: str, action: str) -> None:
        """``acquire`` an infinite lease on ``CONTAINER/blob``, or ``break`` it (what
        ``az storage blob lease ...`` does; Azure refuses writes of a leased blob without its id)."""
        path = f"/{ACCOUNT}/{CONTAINER}/{blob}"
        headers = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": "2021-08-06",
                   "x-ms-lease-action": action, "Content-Length": "0"}
        if action == "acquire":
            headers["x-ms-lease-duration"] = "-1"
        else:
            headers["x-ms-lease-break-period"] = "0"
        headers["Authorization"] = sign("PUT", path, {"comp": "lease"}, headers)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}?comp=lease", method="PUT",
                                         headers=headers)
        urllib.request.urlopen(request, timeout=5).close()
