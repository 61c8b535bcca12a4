"""AWS for tests: moto in server mode, reached by real boto3 clients over HTTP.

A pytest plugin (`pytest_plugins = ["aws_fixtures"]`, or `-p aws_fixtures`):

- `moto_server` (session): one moto server on a loopback port; its URL.
- `aws` (per test): moto reset to empty, and an `Aws` handle with
  `endpoint_url`, `region`, `client(name)`, the API calls those clients made
  (`calls`, `count(...)`), and helpers for the timeline table and a sample
  ECS service.

Credentials are made up per session and given only to the clients built
here; the environment's AWS settings are neither read nor changed.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import re
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import boto3
import pytest

from incident_operator.aws import CLIENT_CONFIG
from incident_operator.devstack.moto import OneRequestAtATime, start_moto
from incident_operator.timeline.dynamodb import create_table

REGION = "us-east-1"
TIMELINE_TABLE = "incident-timeline"


@dataclass(frozen=True)
class MotoServer:
    url: str
    access_key: str
    secret_key: str
    served: OneRequestAtATime

    def served_count(self, operation: str) -> int:
        """How often moto served `operation` (e.g. "UpdateService"), to anyone."""
        return self.served.operations.count(operation)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    # One line per request from werkzeug is noise in test output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server, url, served = start_moto()
    try:
        yield MotoServer(
            url=url,
            access_key="test" + secrets.token_hex(8),
            secret_key=secrets.token_hex(20),
            served=served,
        )
    finally:
        server.stop()


@dataclass
class Aws:
    endpoint_url: str
    region: str
    access_key: str
    secret_key: str
    server: MotoServer
    # "ecs.UpdateService", ... for every API call (not every HTTP retry) made
    # by a client from `client()`, in order.
    calls: list[str] = field(default_factory=list)
    _proxies: list[AwsFaults] = field(default_factory=list)
    _session: boto3.session.Session | None = None
    _session_lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, name: str, *, deny: Iterable[str] = (), record: bool = True) -> Any:
        """A boto3 client for moto.

        `deny`: operations of this service answered with AccessDeniedException.
        `record`: whether its calls count in `calls`.
        """
        endpoint = self.endpoint_url
        if deny:
            proxy = self.faults()
            for operation in deny:
                proxy.inject(f"{name}.{operation}", "denied", forever=True)
            endpoint = proxy.url
        with self._session_lock:
            # One session: it loads each service's model once. Sessions are
            # not thread-safe, clients are; hence the lock.
            if self._session is None:
                self._session = boto3.session.Session(
                    aws_access_key_id=self.access_key,
                    aws_secret_access_key=self.secret_key,
                    region_name=self.region,
                )
            client = self._session.client(name, endpoint_url=endpoint, config=CLIENT_CONFIG)
        if record:
            client.meta.events.register("before-call", self._record)
        return client

    def faults(self, **options: Any) -> AwsFaults:
        """A new fault-injecting proxy to moto (see AwsFaults), closed after the test."""
        proxy = AwsFaults(upstream=self.endpoint_url, **options)
        self._proxies.append(proxy)
        return proxy

    def count(self, call: str) -> int:
        return self.calls.count(call)

    def timeline_table(self, name: str = TIMELINE_TABLE) -> str:
        create_table(self.client("dynamodb", record=False), name)
        return name

    def ecs_service(
        self,
        *,
        cluster: str = "demo",
        service: str = "checkout",
        desired_count: int = 2,
        running: int | None = None,
    ) -> None:
        """An ECS service on the EC2 launch type (moto needs no network setup for it).

        `running` sets MOTO_ECS_SERVICE_RUNNING while the service is created:
        moto reads it there and only there (the server runs in this process),
        and it fixes the deployment's counts and rolloutState for good.
        """
        ecs = self.client("ecs", record=False)
        ecs.create_cluster(clusterName=cluster)
        ecs.register_task_definition(
            family=service,
            containerDefinitions=[{"name": "app", "image": "nginx:stable", "memory": 128}],
        )
        saved = os.environ.pop("MOTO_ECS_SERVICE_RUNNING", None)
        if running is not None:
            os.environ["MOTO_ECS_SERVICE_RUNNING"] = str(running)
        try:
            ecs.create_service(
                cluster=cluster,
                serviceName=service,
                taskDefinition=service,
                desiredCount=desired_count,
            )
        finally:
            os.environ.pop("MOTO_ECS_SERVICE_RUNNING", None)
            if saved is not None:
                os.environ["MOTO_ECS_SERVICE_RUNNING"] = saved

    def deploy(
        self, *, cluster: str = "demo", service: str = "checkout", image: str = "nginx:next"
    ) -> str:
        """A new revision of the service's task definition, deployed; its ARN."""
        ecs = self.client("ecs", record=False)
        registered = ecs.register_task_definition(
            family=service,
            containerDefinitions=[{"name": "app", "image": image, "memory": 128}],
        )
        arn: str = registered["taskDefinition"]["taskDefinitionArn"]
        ecs.update_service(cluster=cluster, service=service, taskDefinition=arn)
        return arn

    def deployments(self, *, cluster: str = "demo", service: str = "checkout") -> list[Any]:
        """The service's deployments as ECS reports them (not counted in `calls`)."""
        ecs = self.client("ecs", record=False)
        found = ecs.describe_services(cluster=cluster, services=[service])["services"]
        return list(found[0]["deployments"])

    def primary(self, *, cluster: str = "demo", service: str = "checkout") -> Any:
        deployments = self.deployments(cluster=cluster, service=service)
        return next(d for d in deployments if d["status"] == "PRIMARY")

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.close()

    def _record(self, event_name: str, **_: Any) -> None:
        self.calls.append(event_name.removeprefix("before-call."))


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[Aws]:
    """Empty moto (every service reset), and clients for it."""
    reset = urllib.request.Request(f"{moto_server.url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(reset, timeout=10) as answer:
        assert answer.status == 200
    handle = Aws(
        endpoint_url=moto_server.url,
        region=REGION,
        access_key=moto_server.access_key,
        secret_key=moto_server.secret_key,
        server=moto_server,
    )
    moto_server.served.operations.clear()
    try:
        yield handle
    finally:
        handle.close()


FaultKind = Literal["throttle", "unavailable", "denied", "lost", "slow"]

# What AWS answers, per service and kind: (HTTP status, error code, message).
_ERRORS: dict[str, dict[str, tuple[int, str, str]]] = {
    "dynamodb": {
        "throttle": (400, "ProvisionedThroughputExceededException", "Rate of requests exceeds"),
        "unavailable": (500, "InternalServerError", "Internal server error"),
        "denied": (400, "AccessDeniedException", "User is not authorized"),
    },
    "ecs": {
        "throttle": (400, "ThrottlingException", "Rate exceeded"),
        "unavailable": (500, "ServerException", "Service unavailable. Try again later."),
        "denied": (400, "AccessDeniedException", "User is not authorized"),
    },
    "ses": {
        "throttle": (400, "Throttling", "Maximum sending rate exceeded."),
        "unavailable": (503, "ServiceUnavailable", "Service is unavailable"),
        "denied": (403, "AccessDenied", "User is not authorized"),
    },
}


class AwsFaults:
    """An HTTP proxy to moto that makes chosen AWS calls fail, as AWS can.

    Point a client (or the operator's AWS_ENDPOINT_URL) at `url`, then
    `inject("ecs.UpdateService", "throttle", "lost")`: the next calls of that
    operation meet those faults, in order, then calls pass again.

    - throttle, unavailable, denied: AWS's own error answer (in the
      service's protocol); moto never sees the call.
    - lost: moto carries the call out, and the connection is closed before
      the answer: the client cannot know whether it happened.
    - slow: moto carries it out, and the answer comes after `slow_seconds`,
      past the client's read timeout.

    `served` counts the faults that happened, by (operation, kind).
    """

    def __init__(self, *, upstream: str, slow_seconds: float = 12.0) -> None:
        self._queues: dict[str, deque[FaultKind]] = {}
        self._forever: dict[str, FaultKind] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.served: Counter[tuple[str, str]] = Counter()
        faults = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                service, operation = _operation(self.headers, body)
                fault = faults._next(f"{service}.{operation}")
                if fault in ("throttle", "unavailable", "denied"):
                    self._error(service, *_ERRORS[service][fault])
                    return
                answer = self._forward(body)
                if fault == "lost":
                    self.close_connection = True
                    return
                if fault == "slow":
                    faults._closing.wait(slow_seconds)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer(*answer)

            def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
                forwarded = urllib.request.Request(
                    upstream + self.path, data=body, method="POST", headers=dict(self.headers)
                )
                try:
                    with urllib.request.urlopen(forwarded, timeout=60) as answer:
                        return answer.status, dict(answer.headers), answer.read()
                except urllib.error.HTTPError as error:
                    return error.code, dict(error.headers), error.read()

            def _error(self, service: str, status: int, code: str, message: str) -> None:
                if service == "ses":  # the query protocol answers in XML
                    body = (
                        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                        f"<Message>{message}</Message></Error>"
                        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
                    ).encode()
                    self._answer(status, {"Content-Type": "text/xml"}, body)
                    return
                kind = self.headers.get("Content-Type", "application/x-amz-json-1.0")
                body = json.dumps({"__type": code, "message": message}).encode()
                self._answer(status, {"Content-Type": kind}, body)

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def inject(self, operation: str, *kinds: FaultKind, forever: bool = False) -> None:
        """The next calls of `operation` ("ecs.UpdateService") meet `kinds`;
        with `forever`, every call meets the one kind given."""
        service = operation.split(".", 1)[0]
        for kind in kinds:
            assert kind in ("lost", "slow") or kind in _ERRORS[service], (service, kind)
        with self._lock:
            if forever:
                (self._forever[operation],) = kinds
            else:
                self._queues.setdefault(operation, deque()).extend(kinds)

    def pending(self) -> int:
        """Faults injected that no call met yet."""
        with self._lock:
            return sum(len(queue) for queue in self._queues.values())

    def _next(self, operation: str) -> FaultKind | None:
        with self._lock:
            queue = self._queues.get(operation)
            fault = queue.popleft() if queue else self._forever.get(operation)
            if fault is not None:
                self.served[(operation, fault)] += 1
            return fault

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _operation(headers: Any, body: bytes) -> tuple[str, str]:
    """(service, operation) of a signed AWS request: the service from the
    signature's credential scope, the operation from X-Amz-Target (JSON
    protocols) or the form's Action (the query protocol)."""
    scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    service = scope.group(1) if scope else "?"
    target = headers.get("X-Amz-Target")
    if target:
        return service, target.rsplit(".", 1)[-1]
    action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action", ["?"])
    return service, action[0]
