"""A relay between a process and the API server that can cut it off.

`ApiServerCuts` forwards TCP to the API server (TLS passes through untouched,
so the client still verifies the server's own certificate). `cut(seconds)`
closes every open connection at once, whatever is in flight on it, and
refuses new ones for that long: an API server restarting, or a network
partition. A request cut after the server took it is the hard case: the
write happened and its answer is lost.

`held()` holds everything sent either way, without closing anything, until
it ends: an API server that takes its time, so that requests stay in flight
as long as a test needs them to.

`kubeconfig(path)` writes a copy of a kubeconfig that goes through the relay.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit


class ApiServerCuts:
    def __init__(self, server_url: str) -> None:
        target = urlsplit(server_url)
        assert target.hostname and target.port, server_url
        self._target = (target.hostname, target.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down_until = 0.0
        self.cuts = 0  # how often it cut
        self.severed = 0  # connections open at a cut
        self.refused = 0  # connections refused while down
        self._flowing = threading.Event()
        self._flowing.set()
        threading.Thread(target=self._accept, name="api-cuts", daemon=True).start()

    def cut(self, seconds: float) -> int:
        """Close every connection now and refuse new ones for `seconds`; how many were open."""
        with self._lock:
            self._down_until = time.monotonic() + seconds
            clients = list(self._open)
            self.cuts += 1
            self.severed += len(clients)
        for connection in clients:
            _close(connection)
        return len(clients)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Forward nothing while inside; what arrived meanwhile goes on after."""
        self._flowing.clear()
        try:
            yield
        finally:
            self._flowing.set()

    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def kubeconfig(self, original: Path, path: Path) -> Path:
        """A copy of `original` whose cluster is reached through this relay."""
        config = json.loads(original.read_text())
        for cluster in config["clusters"]:
            # The API server's certificate names 127.0.0.1, as does the relay.
            cluster["cluster"]["server"] = self.url
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            clients = list(self._open)
        for connection in clients:
            _close(connection)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.is_down():
                with self._lock:
                    self.refused += 1
                _close(connection)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(connection)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.add(connection)
            for source, sink in ((connection, upstream), (upstream, connection)):
                threading.Thread(
                    target=self._pump, args=(connection, source, sink), daemon=True
                ).start()

    def _pump(self, connection: socket.socket, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # Either side gone: the whole connection is.
            _close(source)
            _close(sink)
            with self._lock:
                self._open.discard(connection)


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()
