"""Run `incident-operator run` as a real process, and wait on what it does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from kubernetes import client

from fakes.jira import FakeJira
from fakes.slack import FakeSlack
from incident_operator.devstack import waiting
from incident_operator.devstack.controlplane import free_port
from incident_operator.models import GROUP, VERSION

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], *, timeout: float = 30.0) -> T:
    """Poll `check` until it returns something truthy (`waiting.wait_for`); fail
    the test saying what we waited for: an AssertionError, which tests catch to
    add what they know (the operator's log, the Incident's status)."""
    try:
        return waiting.wait_for(what, check, timeout=timeout)
    except waiting.GaveUp as error:
        raise AssertionError(str(error)) from None


class OperatorProcess:
    """`incident-operator run` for one namespace, started, killed and restarted at will.

    Like one pod: its identity in the Lease stays the same across restarts,
    so a restarted process takes its own Lease back at once; two objects are
    two pods (`name` tells them apart, and their logs).
    """

    def __init__(
        self,
        *,
        namespace: str,
        env: dict[str, str],
        log_dir: Path,
        name: str = "operator",
        args: tuple[str, ...] = (),
    ) -> None:
        self.namespace = namespace
        self.env = env
        self.name = name
        self.identity = f"{name}-{os.urandom(3).hex()}"
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, *, wait: bool = True, until: str = "acting") -> OperatorProcess:
        """Start it; `wait`: until it is `acting` (leading, its startup done), or
        only `alive` (serving its health check: a standby is)."""
        self.port = free_port()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "incident_operator.cli",
                "run",
                "--namespace",
                self.namespace,
                "--liveness",
                f"http://127.0.0.1:{self.port}/healthz",
                "--identity",
                self.identity,
                *self.args,
            ],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            wait_for(f"the operator to be {until}", lambda: self._alive(until), timeout=30)
        return self

    def _alive(self, until: str) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited:\n{self.logs()[-3000:]}")
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.port}/healthz")
        except httpx.TransportError:
            return False
        return answer.status_code == 200 and (until == "alive" or answer.json()["acting"])

    def health(self) -> dict[str, Any]:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
        answer.raise_for_status()
        return dict(answer.json())

    def metrics(self) -> str:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        answer.raise_for_status()
        return answer.text

    def supervise_until(self, what: str, check: Callable[[], bool], *, timeout: float) -> None:
        """Wait for `check`, restarting the operator whenever it dies, as a
        Deployment would in a cluster (crash points kill it on purpose)."""

        def restarted_or_done() -> bool:
            if self.process is not None and self.process.poll() is not None:
                self.start(wait=False)
            return check()

        wait_for(what, restarted_or_done, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as a crash or an OOM kill."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def operator_env(kubeconfig: Path, aws: Any, **extra: str) -> dict[str, str]:
    return {
        "KUBECONFIG": str(kubeconfig),
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_ACCESS_KEY_ID": aws.access_key,
        "AWS_SECRET_ACCESS_KEY": aws.secret_key,
        "AWS_REGION": aws.region,
        "AWS_DEFAULT_REGION": aws.region,
        "TIMELINE_TABLE": "incident-timeline",
        "ECS_CLUSTER_NAME": "demo",
        "GEMINI_API_KEY": "",
        **extra,
    }


def channels_env(slack: FakeSlack, jira: FakeJira, *, channel: str, sender: str) -> dict[str, str]:
    """Settings for every notification channel: the fakes' Slack and Jira, SES in moto."""
    return {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_API_URL": slack.api_url,
        "SLACK_CHANNEL": channel,
        "JIRA_URL": jira.url,
        "JIRA_USER": jira.user,
        "JIRA_TOKEN": jira.token,
        "SES_SENDER": sender,
        "EMAIL_RECIPIENT": "oncall@example.com",
    }


def get_incident(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "incidents", name
        )
    )


def phase_of(api: client.ApiClient, namespace: str, name: str) -> str | None:
    return get_incident(api, namespace, name).get("status", {}).get("phase")


def events_for(api: client.ApiClient, namespace: str, name: str) -> list[Any]:
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return sorted(events.items, key=lambda e: (e.first_timestamp, e.metadata.name))


def create_policy(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "responsepolicies",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResponsePolicy", "metadata": {"name": name},
         "spec": spec},
    )  # fmt: skip
