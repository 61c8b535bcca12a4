"""The chart in a real one-node cluster: the image built from the Dockerfile,
`helm install --wait`, real pods handling alarms.

A user's first step is `docker build` and `helm install`; these tests take the
same steps on this machine without Docker (see incident_operator.devstack.node
and .image): buildah builds the repository's Dockerfile unchanged, containerd
runs it under a kubelet, and the chart is installed with helm. Alarms go to
the webhook through its Service (kube-proxy's rules), AWS is moto on the host,
reached from the pods through the node's DNAT, and nothing leaves the machine.

The cluster has its own control plane (the controller-manager it needs would
change what other tests see in the shared one), and is built once per session,
only when a test here runs. The figures of each stage are printed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config

from aws_fixtures import Aws, MotoServer
from incident_operator.devstack import image
from incident_operator.devstack.controlplane import ControlPlane
from incident_operator.devstack.helm import ensure_helm
from incident_operator.devstack.node import Node
from incident_operator.models import GROUP, VERSION
from operator_support import create_policy, get_incident, phase_of, wait_for
from webhook_support import alertmanager, eventbridge_alarm, new_token

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "incident-operator"
# What the chart's default values name: repository incident-operator, tag appVersion.
CHART_IMAGE = "docker.io/library/incident-operator:{}".format(
    yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
)


@dataclass
class Figures:
    seconds: dict[str, float] = field(default_factory=dict)
    image_bytes: int = 0

    def report(self) -> str:
        stages = ", ".join(f"{stage} {value:.0f} s" for stage, value in self.seconds.items())
        return f"[cluster] {stages}; image {self.image_bytes / 1e6:.0f} MB"


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    collected = Figures()
    yield collected
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{collected.report()}")


@pytest.fixture(scope="session")
def cluster_images(tmp_path_factory: pytest.TempPathFactory, figures: Figures) -> list[Path]:
    """The pause image and the project's, as archives for containerd."""
    assert os.geteuid() == 0, "the one-node cluster needs root (containerd, iptables, cgroups)"
    started = time.monotonic()
    base = image.ensure_base_image()
    pause = image.ensure_pause_image()
    figures.seconds["base image"] = time.monotonic() - started
    started = time.monotonic()
    project = image.build_project_image(tag="localhost/incident-operator:test", base=base)
    figures.seconds["project image"] = time.monotonic() - started
    figures.image_bytes = image.image_size(project)
    archives = tmp_path_factory.mktemp("images")
    return [
        image.export_image(pause, archives / "pause.tar", reference=pause),
        image.export_image(project, archives / "project.tar", reference=CHART_IMAGE),
    ]


@pytest.fixture(scope="session")
def cluster_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def node(
    cluster_plane: ControlPlane,
    cluster_images: list[Path],
    moto_server: MotoServer,
    figures: Figures,
) -> Iterator[Node]:
    started = time.monotonic()
    with Node.start(cluster_plane, images=cluster_images) as running:
        figures.seconds["node Ready"] = time.monotonic() - started
        yield running


@pytest.fixture(scope="session")
def kube(cluster_plane: ControlPlane) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(cluster_plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@dataclass
class Release:
    namespace: str
    token: str
    plane: ControlPlane
    api: client.ApiClient
    helm: Path
    values: Path

    @property
    def fullname(self) -> str:
        return f"{self.namespace}-incident-operator"

    def kubectl(self, *args: str) -> str:
        return self.plane.kubectl("-n", self.namespace, *args).stdout

    def pods(self, component: str, *, terminating: bool = False) -> list[Any]:
        selector = f"app.kubernetes.io/component={component}"
        listed = client.CoreV1Api(self.api).list_namespaced_pod(
            self.namespace, label_selector=selector
        )
        return [p for p in listed.items if terminating or p.metadata.deletion_timestamp is None]

    def leader(self) -> str | None:
        """The operator pod holding the Lease (its identity is its pod's name)."""
        lease = client.CoordinationV1Api(self.api).read_namespaced_lease(
            f"{self.fullname}-operator", self.namespace
        )
        return lease.spec.holder_identity or None

    def webhook_url(self) -> str:
        """The webhook's Service, by its cluster IP (kube-proxy's rules route it)."""
        service = client.CoreV1Api(self.api).read_namespaced_service(
            f"{self.fullname}-webhook", self.namespace
        )
        return f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"

    def wait_service(self) -> None:
        """Until the Service answers: kube-proxy follows a rollout a moment later."""

        def answers() -> bool:
            try:
                return httpx.get(f"{self.webhook_url()}/readyz", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the webhook's Service to answer", answers, timeout=60)

    def post_alarm(self, event: dict[str, Any]) -> str:
        answer = httpx.post(
            f"{self.webhook_url()}/alerts/cloudwatch",
            json=event,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["incidents"][0]["name"])

    def wait_phase(self, name: str, *phases: str, timeout: float = 90) -> dict[str, Any]:
        try:
            wait_for(f"{name} to reach {phases}",
                     lambda: phase_of(self.api, self.namespace, name) in phases,
                     timeout=timeout)  # fmt: skip
        except AssertionError as error:
            logs = self.kubectl("logs", f"deployment/{self.fullname}-operator", "--tail=30")
            raise AssertionError(f"{error}\noperator log:\n{logs}") from None
        return get_incident(self.api, self.namespace, name)

    def post_alertmanager(self, alert: dict[str, Any]) -> str:
        answer = httpx.post(
            f"{self.webhook_url()}/alerts/alertmanager",
            json=alertmanager(alert),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["incidents"][0]["name"])

    def approve(self, name: str) -> None:
        client.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, "incidents", name,
            {"status": {"approval": {"state": "Approved", "by": "alice", "via": "slack"}}},
        )  # fmt: skip


def run_helm(helm: Path, plane: ControlPlane, *args: str) -> None:
    result = subprocess.run(
        [str(helm), *args, "--kubeconfig", str(plane.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def install(
    plane: ControlPlane,
    api: client.ApiClient,
    directory: Path,
    prefix: str,
    values: dict[str, Any],
    *,
    secrets: tuple[dict[str, Any], ...] = (),
    watch_own_namespace: bool = False,
) -> tuple[Release, float]:
    """A namespace with the Secrets the values refer to, then `helm install --wait`."""
    helm = ensure_helm()
    namespace = f"{prefix}-{os.urandom(3).hex()}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    token = new_token()
    tokens = {"metadata": {"name": "incident-ingest-tokens"}, "stringData": {"tokens": token}}
    for secret in (tokens, *secrets):
        core.create_namespaced_secret(namespace, secret)
    if watch_own_namespace:
        values = {**values, "watchNamespaces": [namespace]}
    # Values may name the release's own namespace, which is only known here.
    values = json.loads(json.dumps(values).replace("<namespace>", namespace))
    values_path = directory / f"{namespace}.yaml"
    values_path.write_text(yaml.safe_dump(values))
    started = time.monotonic()
    run_helm(helm, plane, "install", namespace, str(CHART), "-n", namespace,
             "-f", str(values_path), "--wait", "--timeout", "5m")  # fmt: skip
    return Release(namespace, token, plane, api, helm, values_path), time.monotonic() - started


def production_values(moto: MotoServer, node: Node) -> dict[str, Any]:
    """What a cautious production install sets: its own namespace watched, AWS
    configured, credentials from a Secret (IRSA's stand-in), explicit resources."""
    # Pods reach the host's moto only through the node's DNAT.
    moto_address = node.expose(_port(moto.url))
    aws_env = [
        {"name": "AWS_ENDPOINT_URL", "value": f"http://{moto_address}"},
        {"name": "AWS_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": "aws-credentials", "key": "id"}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": "aws-credentials", "key": "secret"}}},
    ]  # fmt: skip
    resources = {"requests": {"cpu": "20m", "memory": "128Mi"},
                 "limits": {"cpu": "1", "memory": "384Mi"}}  # fmt: skip
    return {
        "config": {"TIMELINE_TABLE": "incident-timeline", "ECS_CLUSTER_NAME": "demo",
                   "AWS_REGION": "us-east-1"},
        "operator": {"extraEnv": aws_env, "resources": resources},
        "webhook": {"replicas": 2, "resources": resources, "logLevel": "info"},
        # restart_deployment may act on Deployments of the release's namespace.
        "remediation": {"kubernetes": {"enabled": True, "namespaces": ["<namespace>"]}},
        # AWS is plain HTTP on moto's port here, not HTTPS: one more egress
        # rule, as a proxy would be (the bridge plugin enforces none; a
        # cluster whose plugin does would need it).
        "networkPolicy": {"extraEgress": [{
            "to": [{"ipBlock": {"cidr": f"{moto_address.rsplit(':', 1)[0]}/32"}}],
            "ports": [{"protocol": "TCP", "port": _port(moto_address)}],
        }]},
    }  # fmt: skip


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def production(
    node: Node,
    cluster_plane: ControlPlane,
    kube: client.ApiClient,
    moto_server: MotoServer,
    tmp_path_factory: pytest.TempPathFactory,
    figures: Figures,
) -> Release:
    credentials = {"metadata": {"name": "aws-credentials"},
                   "stringData": {"id": moto_server.access_key,
                                  "secret": moto_server.secret_key}}  # fmt: skip
    release, seconds = install(
        cluster_plane, kube, tmp_path_factory.mktemp("production"), "prod",
        production_values(moto_server, node), secrets=(credentials,), watch_own_namespace=True,
    )  # fmt: skip
    figures.seconds["helm install --wait"] = seconds
    # `--wait` waits for ready pods; kube-proxy programs the Service a moment
    # later (until then a ClusterIP without endpoints refuses connections).
    release.wait_service()
    return release


# --- the tests --------------------------------------------------------------------


def test_default_values_install_and_run_hardened(
    node: Node, cluster_plane: ControlPlane, kube: client.ApiClient, tmp_path: Path
) -> None:
    release, _ = install(cluster_plane, kube, tmp_path, "defaults", {})
    try:
        _check_hardened(release, cluster_plane)
    finally:
        # Its operator watches every namespace: it must not touch the next tests' Incidents.
        run_helm(release.helm, cluster_plane, "uninstall", release.namespace,
                 "-n", release.namespace, "--wait")  # fmt: skip
        wait_for("the default release's pods to go", lambda: not any(
            release.pods(c) for c in ("operator", "webhook")), timeout=90)  # fmt: skip


def _check_hardened(release: Release, cluster_plane: ControlPlane) -> None:
    for component in ("operator", "webhook"):
        pods = release.pods(component)
        assert pods and all(_ready(pod) for pod in pods), component
        pod = pods[0].metadata.name
        # The image's numeric user, and a root filesystem that refuses writes.
        assert release.kubectl("exec", pod, "--", "id", "-u").strip() == "10001"
        attempt = subprocess.run(
            [str(cluster_plane.binaries.kubectl), f"--kubeconfig={cluster_plane.kubeconfig}",
             "-n", release.namespace, "exec", pod, "--", "touch", "/opt/venv/x"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert attempt.returncode != 0 and "Read-only file system" in attempt.stderr
    assert len(release.pods("webhook")) == 2  # the chart's default
    # Two operators: one leads, the other stands by.
    operators = {pod.metadata.name for pod in release.pods("operator")}
    assert len(operators) == 2
    wait_for("an operator to lead", lambda: release.leader() in operators, timeout=60)


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_an_alarm_through_the_service_is_resolved_by_the_operator_pod(
    production: Release, aws: Aws
) -> None:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    before = aws.primary()["id"]
    name = production.post_alarm(
        eventbridge_alarm("checkout-cpu-sev2", service="checkout", cluster="demo",
                          region="us-east-1")
    )  # fmt: skip
    production.wait_phase(name, "AwaitingApproval")
    production.approve(name)
    incident = production.wait_phase(name, "Resolved")
    assert incident["status"]["remediation"]["result"] == "Succeeded"
    assert aws.primary()["id"] != before
    assert aws.server.served_count("UpdateService") == 1


def test_both_pods_log_json_lines(production: Release) -> None:
    for component in ("operator", "webhook"):
        logs = production.kubectl("logs", f"deployment/{production.fullname}-{component}")
        lines = [line for line in logs.splitlines() if line.strip()]
        assert lines, component
        for line in lines:
            assert isinstance(json.loads(line), dict), (component, line)


# Restart payments without asking; its rollout never completes (no task runs),
# so the operator is still watching it when its pod is deleted.
STUCK_ROLLOUT = {
    "match": {"services": ["payments"]},
    "rules": [{"alarmNames": ["payments-cpu-*"], "action": "restart_service"}],
    "approval": {"requiredFor": []},
    "remediation": {"rolloutTimeoutSeconds": 60},
}


def test_deleting_the_leader_pod_mid_remediation_restarts_nothing_twice(
    production: Release, aws: Aws
) -> None:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="payments", running=0)
    create_policy(production.api, production.namespace, "payments-auto", STUCK_ROLLOUT)
    name = production.post_alarm(
        eventbridge_alarm("payments-cpu-sev2", service="payments", cluster="demo",
                          region="us-east-1")
    )  # fmt: skip
    production.wait_phase(name, "Remediating")
    wait_for("the restart", lambda: aws.server.served_count("UpdateService") == 1, timeout=30)
    leader, operators = production.leader(), {p.metadata.name for p in production.pods("operator")}
    assert leader in operators
    production.kubectl("delete", "pod", leader, "--wait=false")
    deleted = time.monotonic()
    # Its SIGTERM hands the Lease over: the standby leads at once and takes
    # the Incident over; the Deployment brings a new standby.
    wait_for("the standby to lead", lambda: production.leader() not in (None, leader),
             timeout=30)  # fmt: skip
    print(f"cluster: the standby led {time.monotonic() - deleted:.2f}s after the delete")
    wait_for("a new operator pod", lambda: [
        p for p in production.pods("operator") if p.metadata.name not in operators and _ready(p)
    ], timeout=120)  # fmt: skip
    incident = production.wait_phase(name, "Escalated", timeout=120)
    assert incident["status"]["remediation"]["result"] == "TimedOut"
    assert aws.server.served_count("UpdateService") == 1


def test_the_operator_pod_rolls_a_real_deployment_on_an_alert(production: Release) -> None:
    """restart_deployment with real pods: the chart's opt-in RBAC, the operator's
    patch, the Deployment controller's rollout, the kubelet's new pod."""
    apps = client.AppsV1Api(production.api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(production.namespace, {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": CHART_IMAGE,
                                "imagePullPolicy": "Never", "command": ["sleep", "3600"]}],
            }},
        },
    })  # fmt: skip

    def web_pods() -> list[str]:
        listed = client.CoreV1Api(production.api).list_namespaced_pod(
            production.namespace, label_selector="app=web"
        )
        return [p.metadata.name for p in listed.items if _ready(p)]

    first = wait_for("web's pod to be ready", lambda: web_pods() or None, timeout=90)
    create_policy(production.api, production.namespace, "web", {
        "match": {"services": ["web"]},
        "allowedActions": ["restart_deployment", "notify_team", "ignore"],
        "actions": {"restart_deployment": {"namespaces": [production.namespace]}},
        "rules": [{"alarmNames": ["WebDown"], "action": "restart_deployment"}],
        "approval": {"requiredFor": []},
    })  # fmt: skip
    name = production.post_alertmanager({
        "status": "firing",
        "labels": {"alertname": "WebDown", "deployment": "web",
                   "namespace": production.namespace, "severity": "critical"},
        "annotations": {"summary": "web is down"},
        "startsAt": "2026-11-30T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "web-down",
    })  # fmt: skip

    try:
        incident = production.wait_phase(name, "Resolved", "Escalated", timeout=120)
        now = wait_for("web's new pod", lambda: [p for p in web_pods() if p not in first] or None,
                       timeout=60)  # fmt: skip
        found = apps.read_namespaced_deployment("web", production.namespace)
    finally:
        # Not the release's: uninstalling it (the last test) would leave it behind.
        apps.delete_namespaced_deployment("web", production.namespace,
                                          propagation_policy="Foreground")  # fmt: skip

    assert incident["status"]["phase"] == "Resolved", incident["status"].get("message")
    conditions = {c["type"]: c["reason"] for c in incident["status"]["conditions"]}
    assert conditions["Remediated"] == "RestartSucceeded"
    assert incident["status"]["remediation"]["target"] == f"kubernetes/{production.namespace}/web"
    assert "kubectl.kubernetes.io/restartedAt" in found.spec.template.metadata.annotations
    assert found.metadata.generation == 2  # restarted once
    assert set(now).isdisjoint(first)


def test_an_upgrade_rolls_the_pods_and_the_pipeline_still_works(
    production: Release, aws: Aws
) -> None:
    before = {p.metadata.name for c in ("operator", "webhook") for p in production.pods(c)}
    values = yaml.safe_load(production.values.read_text())
    values["webhook"]["logLevel"] = "debug"
    values["operator"]["logLevel"] = "debug"
    production.values.write_text(yaml.safe_dump(values))
    # Alarms keep coming during the rollout; none may meet a closed port or a
    # 5xx (a stopping webhook keeps serving until its endpoint is withdrawn).
    sender = _Sender(production)
    sender.start()
    try:
        run_helm(production.helm, production.plane, "upgrade", production.namespace, str(CHART),
                 "-n", production.namespace, "-f", str(production.values), "--wait",
                 "--timeout", "5m")  # fmt: skip
        wait_for("only new pods", lambda: all(
            p.metadata.name not in before and _ready(p)
            for c in ("operator", "webhook") for p in production.pods(c, terminating=True)
        ) and len(production.pods("webhook", terminating=True)) == 2, timeout=120)  # fmt: skip
    finally:
        sender.stop()
    assert sender.sent >= 20, sender.sent
    assert sender.failures == [], sender.failures[:5]
    for component in ("operator", "webhook"):
        args = production.pods(component)[0].spec.containers[0].args
        assert args[args.index("--log-level") + 1] == "debug"
    production.wait_service()
    test_an_alarm_through_the_service_is_resolved_by_the_operator_pod(production, aws)


class _Sender(threading.Thread):
    """Posts an alarm to the webhook's Service every 0.2 s, noting every failure."""

    def __init__(self, release: Release) -> None:
        super().__init__(daemon=True)
        self.release = release
        self.url = f"{release.webhook_url()}/alerts/cloudwatch"
        self.sent = 0
        self.failures: list[str] = []
        self._done = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.release.token}"}
        while not self._done.wait(0.2):
            # A low-severity alarm: ignored by the rules, nothing restarted.
            event = eventbridge_alarm("search-noise-sev5", service="search", cluster="demo",
                                      region="us-east-1")  # fmt: skip
            try:
                answer = httpx.post(self.url, json=event, headers=headers, timeout=30)
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code}: {answer.text[:200]}")
            except httpx.TransportError as error:
                self.failures.append(f"{type(error).__name__}: {error}")
            self.sent += 1

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=60)


def test_uninstall_leaves_no_workload(production: Release) -> None:
    run_helm(production.helm, production.plane, "uninstall", production.namespace,
             "-n", production.namespace, "--wait", "--timeout", "3m")  # fmt: skip
    core = client.CoreV1Api(production.api)
    apps = client.AppsV1Api(production.api)

    def gone() -> bool:
        namespace = production.namespace
        return not (
            core.list_namespaced_pod(namespace).items
            or apps.list_namespaced_deployment(namespace).items
            or apps.list_namespaced_replica_set(namespace).items
            or core.list_namespaced_service(namespace).items
            or [a for a in core.list_namespaced_service_account(namespace).items
                if a.metadata.name != "default"]
        )  # fmt: skip

    wait_for("the release's workload to be gone", gone, timeout=120)
