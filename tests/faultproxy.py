"""A TCP proxy on 127.0.0.1 that forwards to a server and, when told, stalls or cuts response bodies.

The remote tests start one in a thread in front of the SeaweedFS fixture: in ``"stall"`` mode
each response is forwarded up to its first body byte and then nothing more is sent (the
connection stays open, as a server that hangs mid-body would leave it); in ``"cut"`` mode the
connection is closed there instead; ``"pass"`` forwards everything.
"""

from __future__ import annotations

import socket
import threading
from typing import Self


class FaultProxy:
    """``with FaultProxy(port) as proxy:`` listens on ``proxy.port`` and forwards to ``port``."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.mode = "pass"
        self.faults = 0  # responses stalled or cut so far
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, responses: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                mode = self.mode
                head = data.find(b"\r\n\r\n")
                if responses and mode != "pass" and head >= 0:
                    sink.sendall(data[:head + 5])  # the status, the headers and one byte of the body
                    with self._lock:
                        self.faults += 1
                    if mode == "cut":
                        break
                    self._closed.wait()  # stalled: hold the connection open, send nothing more
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
