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

import http.server
import json
import logging
import os
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from incident_operator.devstack.moto import OneRequestAtATime, start_moto
from incident_operator.timeline.dynamodb import CLIENT_CONFIG, create_table

REGION = "us-east-1"
TIMELINE_TABLE = "incident-timeline"
ECS_TARGET = "AmazonEC2ContainerServiceV20141113"


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
    _proxies: list[_DenyingProxy] = field(default_factory=list)
    _session: boto3.session.Session | None = None
    _session_lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, name: str, *, deny: Iterable[str] = (), record: bool = True) -> Any:
        """A boto3 client for moto.

        `deny`: ECS operations answered with AccessDeniedException.
        `record`: whether its calls count in `calls`.
        """
        endpoint = self.endpoint_url
        if deny:
            proxy = _DenyingProxy(upstream=self.endpoint_url, deny=frozenset(deny))
            self._proxies.append(proxy)
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


class _DenyingProxy:
    """An HTTP proxy to moto that refuses some ECS operations, as IAM would.

    moto does not enforce IAM by default; this is the smallest faithful way
    to get AWS's own AccessDeniedException answer through the real client.
    """

    def __init__(self, *, upstream: str, deny: frozenset[str]) -> None:
        denied = {f"{ECS_TARGET}.{operation}" for operation in deny}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("X-Amz-Target") in denied:
                    self._answer(
                        400,
                        {"Content-Type": "application/x-amz-json-1.1"},
                        json.dumps(
                            {
                                "__type": "AccessDeniedException",
                                "message": "User is not authorized to perform this action",
                            }
                        ).encode(),
                    )
                    return
                forwarded = urllib.request.Request(
                    upstream + self.path, data=body, method="POST", headers=dict(self.headers)
                )
                try:
                    with urllib.request.urlopen(forwarded, timeout=30) as answer:
                        self._answer(answer.status, dict(answer.headers), answer.read())
                except urllib.error.HTTPError as error:
                    self._answer(error.code, dict(error.headers), error.read())

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
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
