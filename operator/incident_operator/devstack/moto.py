"""moto in server mode, made faithful enough for concurrent clients and for
ECS service deployments (ecs_deployments.py)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from moto.server import ThreadedMotoServer

from .ecs_deployments import EcsDeployments


class OneRequestAtATime:
    """WSGI middleware: let moto handle one request at a time.

    moto's backends are not thread-safe. Concurrent DynamoDB transactions
    there can both pass a condition, or one's rollback can erase the other's
    write (seen: about one 6-way race in a hundred let two conflicting
    transactions commit). DynamoDB itself serializes conflicting
    transactions, so serializing requests is the faithful model. It also
    counts the operations it served (the X-Amz-Target of JSON protocols),
    whoever the client was.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.operations: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self._lock:
            target = environ.get("HTTP_X_AMZ_TARGET")
            if target:
                self.operations.append(target.rsplit(".", 1)[-1])
            return list(self._app(environ, start_response))


def start_moto(port: int = 0) -> tuple[ThreadedMotoServer, str, OneRequestAtATime]:
    """Start moto on loopback; return the server, its URL and its request gate."""
    # One werkzeug line per request is noise around everything else.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # ThreadedMotoServer has no hook for middleware; its werkzeug server does.
    wsgi_server = server._server
    if wsgi_server is None:
        server.stop()
        raise RuntimeError("moto's server layout changed: update OneRequestAtATime")
    gate = wsgi_server.app = OneRequestAtATime(EcsDeployments(wsgi_server.app))
    host, bound = server.get_host_and_port()
    return server, f"http://{host}:{bound}", gate
