"""A real Prometheus Alertmanager and a real webhook process, for interop tests.

`alertmanager` (the fixture) starts the binary that
`incident_operator.devstack.alertmanager` builds, on loopback, clustering off,
with the routing a test gives and one webhook receiver pointing at the ingest
webhook's `/alerts/alertmanager` with a bearer token read from a file.
`webhook_server` runs `incident-operator webhook` as a process on a port
chosen up front, so that Alertmanager can be pointed at it before it listens.
Both are stopped when the test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from incident_operator.devstack.alertmanager import ensure_alertmanager
from incident_operator.devstack.controlplane import free_port
from operator_support import wait_for
from webhook_support import new_token

RECEIVER = "incident-operator"


def metric(text: str, sample: str, **labels: str) -> float:
    """The sum of `sample` over the series whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for series in family.samples:
            if series.name == sample and labels.items() <= series.labels.items():
                total += series.value
    return total


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert(
    *, starts_at: datetime | None = None, ends_at: datetime | None = None, **labels: str
) -> dict[str, Any]:
    """An alert as Prometheus posts it to `/api/v2/alerts`: labels, and when.

    No endsAt: firing until resolve_timeout. endsAt in the past: resolved.
    """
    body: dict[str, Any] = {"labels": labels, "annotations": {"summary": f"{labels} fires"}}
    if starts_at is not None:
        body["startsAt"] = iso(starts_at)
    if ends_at is not None:
        body["endsAt"] = iso(ends_at)
    return body


def _stop(process: subprocess.Popen[bytes], *, timeout: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class WebhookServer:
    """`incident-operator webhook` for one namespace on a fixed loopback port."""

    kubeconfig: Path
    namespace: str
    token: str
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alertmanager_url(self) -> str:
        return f"{self.url}/alerts/alertmanager"

    def start(self) -> WebhookServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "incident_operator.cli", "webhook",
                 "--host", "127.0.0.1", "--port", str(self.port), "--namespace", self.namespace],
                env={**env, "KUBECONFIG": str(self.kubeconfig), "INGEST_TOKENS": self.token},
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for("the webhook to be ready", self._ready, timeout=30)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the webhook exited:\n{self.logs()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, sample: str, **labels: str) -> float:
        return metric(self.metrics(), sample, **labels)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.logs().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


@dataclass
class Alertmanager:
    """One Alertmanager process with one webhook receiver."""

    binary: Path
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "alertmanager.log"

    def start(self, config: dict[str, Any]) -> Alertmanager:
        # JSON is YAML: Alertmanager reads it as its config file.
        config_file = self.workdir / "alertmanager.yml"
        config_file.write_text(json.dumps(config, indent=2))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--config.file={config_file}",
                    f"--storage.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--web.external-url={self.url}",
                    "--cluster.listen-address=",  # no gossip: a single instance
                    "--log.level=debug",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for("Alertmanager to be ready", self._ready, timeout=30)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Alertmanager exited:\n{self.logs()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def post_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        """What Prometheus does: POST the alerts to `/api/v2/alerts`."""
        answer = httpx.post(f"{self.url}/api/v2/alerts", json=list(alerts), timeout=10)
        assert answer.status_code == 200, answer.text

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds, with the fingerprints it gave them."""
        answer = httpx.get(f"{self.url}/api/v2/alerts", timeout=10)
        answer.raise_for_status()
        return list(answer.json())

    def fingerprint(self, **labels: str) -> str:
        """The fingerprint of the one alert whose labels include `labels`."""
        [found] = [a for a in self.alerts() if labels.items() <= a["labels"].items()]
        return str(found["fingerprint"])

    def metric(self, sample: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return metric(text, sample, **labels)

    def notifications(self) -> dict[str, float]:
        """The webhook integration's counters: notifications and HTTP requests, and failures."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        webhook = {"integration": "webhook"}
        return {
            "sent": metric(text, "alertmanager_notifications_total", **webhook),
            "failed": metric(text, "alertmanager_notifications_failed_total", **webhook),
            "requests": metric(text, "alertmanager_notification_requests_total", **webhook),
            "requests_failed": metric(
                text, "alertmanager_notification_requests_failed_total", **webhook
            ),
        }

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)


def alertmanager_config(
    webhook_url: str,
    token_file: Path,
    *,
    group_by: Sequence[str] = ("alertname",),
    group_wait: str = "500ms",
    group_interval: str = "1s",
    repeat_interval: str = "1h",
    max_alerts: int = 0,
) -> dict[str, Any]:
    """Route everything to one webhook receiver, the way the README tells users to."""
    return {
        "route": {
            "receiver": RECEIVER,
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": RECEIVER,
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "max_alerts": max_alerts,
                        # Each attempt, not the retries: a hung webhook is retried.
                        "timeout": "5s",
                        "http_config": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials_file": str(token_file),
                            }
                        },
                    }
                ],
            }
        ],
    }


@dataclass
class Interop:
    """What a test needs: a webhook (not started) and a way to start Alertmanager."""

    webhook: WebhookServer
    token_file: Path
    binary: Path
    workdir: Path
    started: list[Alertmanager] = field(default_factory=list)

    def start_alertmanager(self, **routing: Any) -> Alertmanager:
        """Alertmanager delivering to the webhook's port (listening or not)."""
        config = alertmanager_config(self.webhook.alertmanager_url, self.token_file, **routing)
        workdir = self.workdir / f"alertmanager-{len(self.started)}"
        workdir.mkdir()
        manager = Alertmanager(self.binary, workdir)
        self.started.append(manager)
        return manager.start(config)


@pytest.fixture(scope="session")
def alertmanager_binary() -> Path:
    return ensure_alertmanager()


@pytest.fixture
def interop(
    alertmanager_binary: Path,
    kubeconfig: Path,
    namespace: str,
    crds_installed: None,
    tmp_path: Path,
) -> Iterator[Interop]:
    """A webhook for this test's namespace (start it with `interop.webhook.start()`)
    and Alertmanagers pointed at it; all stopped at the end, nothing left behind."""
    token = new_token()
    token_file = tmp_path / "incident-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    webhook = WebhookServer(kubeconfig, namespace, token, tmp_path / "webhook.log")
    setup = Interop(webhook, token_file, alertmanager_binary, tmp_path)
    try:
        yield setup
    finally:
        for manager in setup.started:
            manager.stop()
        webhook.stop()
