"""A loopback HTTP server for fakes: each fake answers (method, path, query, headers, body)."""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Call:
    """One request as received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    def params(self) -> dict[str, Any]:
        """Query, JSON body or form fields, as the client chose to send them."""
        params: dict[str, Any] = dict(self.query)
        kind = self.headers.get("content-type", "")
        if self.body and kind.startswith("application/json"):
            params.update(self.json() or {})
        elif self.body:
            params.update(self.form())
        return params


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None  # JSON, or bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    # Faults after the request was acted on: answer late, or close the
    # connection without answering (the client cannot tell what happened).
    delay: float = 0.0
    drop: bool = False


Serve = Callable[[Call], Answer]


class Loopback:
    """Serve `serve` on 127.0.0.1 on a free port until `stop()`."""

    def __init__(self, serve: Serve) -> None:
        closing = self._closing = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def do_PUT(self) -> None:
                self._answer("PUT")

            def _answer(self, method: str) -> None:
                url = urlsplit(self.path)
                call = Call(
                    method=method,
                    path=url.path,
                    query={k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=self.rfile.read(int(self.headers.get("Content-Length") or 0)),
                )
                answer = serve(call)
                if answer.drop:
                    self.close_connection = True
                    return
                if answer.delay and closing.wait(answer.delay):
                    return  # stopping; the client has long given up
                data = (
                    answer.body
                    if isinstance(answer.body, bytes)
                    else json.dumps(answer.body).encode()
                )
                try:
                    self.send_response(answer.status)
                    if not isinstance(answer.body, bytes):
                        self.send_header("Content-Type", "application/json; charset=utf-8")
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: expected in timeout tests

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the fakes record requests; stderr stays quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Served:
    """Base of a fake served on loopback: it answers in `_serve`; `start`, `url`, `stop`.

    `slow` and `lose` script faults that strike after the fake acted on a
    request; the fake's `_serve` passes its answers through `_late(what, ...)`.
    """

    _loopback: Loopback | None = None
    # Deques: appended and popped from handler threads, atomically.
    _after: dict[str, deque[Answer]] = field(default_factory=dict)

    def slow(self, what: str, seconds: float, *, times: int = 1) -> None:
        """The next `times` requests for `what` are acted on, answered after `seconds`."""
        self._after.setdefault(what, deque()).extend([Answer(delay=seconds)] * times)

    def lose(self, what: str, *, times: int = 1) -> None:
        """The next `times` requests for `what` are acted on, and never answered."""
        self._after.setdefault(what, deque()).extend([Answer(drop=True)] * times)

    def pending(self) -> int:
        """Scripted faults that no request met yet."""
        return sum(len(queue) for queue in self._after.values())

    def _late(self, what: str, answer: Answer) -> Answer:
        queue = self._after.get(what)
        if not queue:
            return answer
        fault = queue.popleft()
        return replace(answer, delay=fault.delay, drop=fault.drop)

    def _serve(self, call: Call) -> Answer:
        raise NotImplementedError

    @property
    def url(self) -> str:
        assert self._loopback is not None, "not started"
        return self._loopback.url

    def start(self) -> Self:
        self._loopback = Loopback(self._serve)
        return self

    def stop(self) -> None:
        if self._loopback is not None:
            self._loopback.stop()
