"""The Helm chart: it renders, installs into a real API server, and its RBAC is
both enough and no more than enough.

"Enough" is shown the only convincing way: the operator and the webhook run
as local processes (there is no kubelet here) with the arguments and
environment the chart gives their containers, authenticated as the chart's
ServiceAccounts, and one alarm goes all the way to a resolved Incident.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config

from aws_fixtures import Aws
from chart_support import (
    CHART,
    REPO,
    Manifests,
    container,
    find,
    kinds,
    pod_spec,
    render,
    run_helm,
    values_file,
)
from incident_operator import crd
from incident_operator.config import Settings
from incident_operator.devstack.controlplane import ControlPlane, free_port
from incident_operator.models import GROUP, VERSION
from operator_support import events_for, get_incident, phase_of, wait_for
from webhook_support import eventbridge_alarm, new_token

pytestmark = pytest.mark.usefixtures("crds_installed")


# Non-default values touching every switch; secrets only by reference.
EVERYTHING = {
    "watchNamespaces": ["ops", "payments"],
    "operator": {
        "replicas": 3,
        "leaderElection": {"leaseDurationSeconds": 30, "renewDeadlineSeconds": 20,
                           "retryPeriodSeconds": 4},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "serviceAccount": {"annotations": {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/incident-operator"}},
    },
    "prometheusRule": {"enabled": True, "stuckAfterSeconds": 900,
                       "labels": {"release": "prometheus"}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Incidents"}},
    "webhook": {
        "replicas": 3,
        "ingress": {"enabled": True, "className": "nginx",
                    "tls": [{"secretName": "incidents-tls", "hosts": ["incidents.example.com"]}]},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "docsEnabled": True,
    },
    "secrets": {"existingSecret": "incident-integrations"},
    "ui": {"enabled": True, "authProxyHeader": "X-Forwarded-User"},
    "config": {"TIMELINE_TABLE": "incident-timeline", "ECS_CLUSTER_NAME": "prod",
               "SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:111122223333:incident-*",
               "INGEST_MAX_ALERTS_PER_REQUEST": 50},
}  # fmt: skip


# --- the chart's files --------------------------------------------------------


def test_chart_crds_are_the_generated_ones() -> None:
    for name, definition in crd.file_names().items():
        shipped = (CHART / "crds" / name).read_text()
        assert shipped == crd.render(definition) == (REPO / "crds" / name).read_text(), name
    # Only ours: no kopf peering (it pauses replicas rather than electing one).
    assert {p.name for p in (CHART / "crds").iterdir()} == set(crd.file_names())


# Settings the chart sets itself, and the ones with no place in a cluster.
SET_BY_THE_CHART = {"INCIDENT_NAMESPACE", "INGEST_TOKENS_FILE", "INGEST_AUTH_DISABLED",
                    "WATCH_NAMESPACES", "INGEST_DOCS_ENABLED",
                    "UI_TOKENS_FILE", "UI_AUTH_PROXY_HEADER", "UI_AUTH_DISABLED"}  # fmt: skip
LEFT_OUT = {
    "INGEST_TOKENS",  # tokens come from the mounted Secret (INGEST_TOKENS_FILE)
    "UI_TOKENS",  # likewise (UI_TOKENS_FILE)
    "SNS_TRUSTED_CERTS_DIR",  # local SNS certificates: tests and private partitions
}


def test_every_setting_has_its_place_and_secrets_come_from_secrets(
    helm: Path, tmp_path: Path
) -> None:
    settings = {name.upper(): field for name, field in Settings.model_fields.items()}
    documented = set(yaml.safe_load((CHART / "values.yaml").read_text())["config"])
    manifests = render(helm, values_file(tmp_path, EVERYTHING))
    from_secrets = {
        e["name"]
        for component in ("operator", "webhook")
        for e in container(manifests, component)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert documented | from_secrets | SET_BY_THE_CHART | LEFT_OUT == set(settings)
    secret_typed = {n for n, f in settings.items() if "SecretStr" in str(f.annotation)}
    assert secret_typed - LEFT_OUT == from_secrets


def test_lint_passes_with_default_and_other_values(helm: Path, tmp_path: Path) -> None:
    run_helm(helm, "lint", "--strict", str(CHART))
    run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values_file(tmp_path, EVERYTHING)))


# --- rendering ------------------------------------------------------------------


def test_defaults_render_two_electing_operators_and_a_hardened_webhook(
    helm: Path, tmp_path: Path
) -> None:
    manifests = render(helm, values_file(tmp_path, {}))
    deployment = find(manifests, "Deployment", "io-incident-operator-operator")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    operator = container(manifests, "operator")
    args = operator["args"]
    assert args[:3] == ["run", "--liveness", "http://0.0.0.0:8081/healthz"]
    assert "--peering" not in args and "--namespace" not in args
    lease = {args[i]: args[i + 1] for i, a in enumerate(args) if a.startswith("--lease")}
    assert lease == {"--lease-name": "io-incident-operator-operator", "--lease-namespace": "ops",
                     "--lease-duration": "15"}  # fmt: skip
    assert args[args.index("--renew-deadline") + 1] == "10"
    assert args[args.index("--retry-period") + 1] == "2"
    pod_name = next(e for e in operator["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # A drain or an upgrade takes one replica at a time; they prefer two nodes.
    budget = find(manifests, "PodDisruptionBudget", "io-incident-operator-operator")
    assert budget["spec"]["maxUnavailable"] == 1
    affinity = pod_spec(manifests, "operator")["affinity"]["podAntiAffinity"]
    assert affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    service = find(manifests, "Service", "io-incident-operator-operator")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8081, "targetPort": "http", "protocol": "TCP"}
    ]
    webhook = container(manifests, "webhook")
    assert webhook["args"][:3] == ["webhook", "--port", "8080"]
    assert webhook["livenessProbe"]["httpGet"]["path"] == "/health"
    assert webhook["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in webhook["env"]}
    assert env["INCIDENT_NAMESPACE"] == "ops"
    assert env["INGEST_TOKENS_FILE"] == "/etc/incident-operator/ingest/tokens"
    # No docs, and SNS refuses every topic until the user names theirs.
    assert env["INGEST_DOCS_ENABLED"] == "false"
    assert "SNS_TOPIC_ARNS" not in env
    for component in ("operator", "webhook"):
        pod = pod_spec(manifests, component)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        hardening = container(manifests, component)["securityContext"]
        assert hardening["readOnlyRootFilesystem"] is True
        assert hardening["allowPrivilegeEscalation"] is False
        assert hardening["capabilities"] == {"drop": ["ALL"]}
        writable = {m["mountPath"] for m in container(manifests, component)["volumeMounts"]}
        assert "/tmp" in writable
        assert container(manifests, component)["resources"]["limits"]["memory"]
    # Every namespace watched: the operator's rights are one ClusterRole.
    assert find(manifests, "ClusterRole", "io-incident-operator-operator")
    assert sorted(m["metadata"]["name"] for m in manifests if m["kind"] == "Role") == [
        "io-incident-operator-operator-lease", "io-incident-operator-webhook"
    ]  # fmt: skip
    lease_role = find(manifests, "Role", "io-incident-operator-operator-lease", "ops")
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["io-incident-operator-operator"],
         "verbs": ["get", "update", "list", "watch"]},
    ]  # fmt: skip
    assert not kinds(manifests) & {
        "Secret", "Ingress", "ServiceMonitor", "PrometheusRule", "ConfigMap", "ClusterKopfPeering"
    }  # fmt: skip


def test_every_switch_renders(helm: Path, tmp_path: Path) -> None:
    manifests = render(helm, values_file(tmp_path, EVERYTHING))
    args = container(manifests, "operator")["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--namespace"] == ["ops", "payments"]
    assert args[args.index("--lease-duration") + 1] == "30"
    assert args[args.index("--renew-deadline") + 1] == "20"
    assert find(manifests, "Deployment", "io-incident-operator-operator")["spec"]["replicas"] == 3
    for namespace in ("ops", "payments"):
        role = find(manifests, "Role", "io-incident-operator-operator", namespace)
        assert {r["apiGroups"][0] for r in role["rules"]} == {"incident-response.dev", ""}
    # What stays cluster-wide when namespaces are given: no Incident rights.
    cluster_rules = find(manifests, "ClusterRole", "io-incident-operator-operator")["rules"]
    assert {r["resources"][0] for r in cluster_rules} == {
        "customresourcedefinitions", "responsepolicies", "namespaces"
    }  # fmt: skip
    account = find(manifests, "ServiceAccount", "io-incident-operator-operator")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    assert find(manifests, "Deployment", "io-incident-operator-webhook")["spec"]["replicas"] == 3
    env = {e["name"]: e.get("value") for e in container(manifests, "webhook")["env"]}
    assert env["INGEST_DOCS_ENABLED"] == "true"
    assert env["SNS_TOPIC_ARNS"] == "arn:aws:sns:eu-west-1:111122223333:incident-*"
    assert env["INGEST_MAX_ALERTS_PER_REQUEST"] == "50"
    ingress = find(manifests, "Ingress", "io-incident-operator-webhook")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    for component in ("webhook", "operator"):
        monitor = find(manifests, "ServiceMonitor", f"io-incident-operator-{component}")
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        # It selects the component's Service, by labels that Service has.
        service = find(manifests, "Service", f"io-incident-operator-{component}")
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] in {
            p["name"] for p in service["spec"]["ports"]
        }
    rules = find(manifests, "PrometheusRule", "io-incident-operator")
    alerts = {r["alert"]: r for r in rules["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "IncidentOperatorNoLeader",
        "IncidentNotificationChannelFailing",
        "IncidentStuck",
        "IncidentAwaitingApprovalTooLong",
        "IncidentAIFailing",
        "IncidentWebhookShedding",
    }
    assert alerts["IncidentStuck"]["expr"].endswith("> 900")
    dashboard = find(manifests, "ConfigMap", "io-incident-operator-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Incidents"}
    assert json.loads(dashboard["data"]["incident-operator.json"])["uid"] == "incident-operator"
    # Each process gets only the credentials it uses, by reference, optional.
    refs = {
        component: {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in container(manifests, component)["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        for component in ("operator", "webhook")
    }
    assert set(refs["operator"]) == {"GEMINI_API_KEY", "SLACK_BOT_TOKEN", "JIRA_TOKEN",
                                     "PAGERDUTY_ROUTING_KEY", "PAGERDUTY_ROUTING_KEYS",
                                     "OUTBOUND_WEBHOOKS"}  # fmt: skip

    # The UI needs no credentials at all; behind a proxy, no tokens either.
    ui = container(manifests, "ui")
    assert not [e for e in ui["env"] if "valueFrom" in e]
    ui_env = {e["name"]: e.get("value") for e in ui["env"]}
    assert ui_env["UI_AUTH_PROXY_HEADER"] == "X-Forwarded-User"
    assert "UI_TOKENS_FILE" not in ui_env and not pod_spec(manifests, "ui")["volumes"][1:]
    assert ui["args"][:3] == ["ui", "--port", "8090"]
    assert find(manifests, "NetworkPolicy", "io-incident-operator-ui")
    assert set(refs["webhook"]) == {"SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN",
                                    "PAGERDUTY_WEBHOOK_SECRETS"}  # fmt: skip
    for ref in [*refs["operator"].values(), *refs["webhook"].values()]:
        assert ref["name"] == "incident-integrations" and ref["optional"] is True


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {
                "operator": {
                    "leaderElection": {
                        "leaseDurationSeconds": 10,
                        "renewDeadlineSeconds": 10,
                        "retryPeriodSeconds": 2,
                    }
                }
            },
            "below leaseDurationSeconds",
        ),
        ({"operator": {"peering": {"enabled": True}}}, "peering"),  # gone: it froze replicas
        ({"prometheusRule": {"aiFailureRatio": 2}}, "aiFailureRatio"),
        ({"operator": {"serviceMonitor": {"interval": "often"}}}, "interval"),
        ({"webhook": {"ingestTokens": {"existingSecret": ""}}}, "ingestTokens.existingSecret"),
        ({"watchNamespaces": ["payments"]}, "watchNamespaces must include ops"),
        ({"config": {"JIRA_TOKEN": "hunter2"}}, "JIRA_TOKEN"),
        ({"config": {"SNS_TOPIC_ARNS": "*"}}, "SNS_TOPIC_ARNS"),  # ARNs, not "any topic"
        ({"config": {"INGEST_MAX_ALERTS_PER_REQUEST": 0}}, "INGEST_MAX_ALERTS_PER_REQUEST"),
        ({"webhook": {"docsEnabled": "yes"}}, "docsEnabled"),
        ({"ui": {"enabled": True}}, "ui.tokens.existingSecret"),  # never open by accident
        ({"ui": {"authProxyHeader": "X-User: admin"}}, "authProxyHeader"),
    ],
)
def test_misconfiguration_is_refused_saying_why(
    helm: Path, tmp_path: Path, values: dict[str, Any], complaint: str
) -> None:
    result = run_helm(
        helm, "template", "io", str(CHART), "-n", "ops", "-f", str(values_file(tmp_path, values)),
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert complaint in result.stderr


# --- the dashboard and the alerts name what the code exports -------------------

# PromQL words that are not metric names.
_PROMQL = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
           "and", "or", "unless", "le", "inf", "nan"}  # fmt: skip


def exported_series() -> set[str]:
    """Every series name the operator and the webhook export."""
    from prometheus_client import CollectorRegistry

    from incident_operator import metrics
    from incident_operator.ingest.metrics import IngestMetrics

    families = dict(metrics.families())
    webhook = CollectorRegistry()
    IngestMetrics(webhook)
    families |= {family.name: family.type for family in webhook.collect()}
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    return {name + suffix for name, kind in families.items() for suffix in suffixes[kind]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings (label values, legends)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # groupings
    words = re.findall(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", expr)
    return {w for w in words if w.lower() not in _PROMQL and not w.startswith("$")}


def test_the_dashboard_is_valid_json_and_every_query_names_an_exported_metric() -> None:
    dashboard = json.loads((CHART / "dashboards" / "incident-operator.json").read_text())
    exported = exported_series()
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(queries) >= 20
    for expr in queries:
        names = metric_names(expr)
        assert names, f"names no metric: {expr}"
        assert names <= exported, f"{expr}: not exported: {names - exported}"
    # What the issue asks to see.
    titles = " | ".join(panel["title"] for panel in dashboard["panels"])
    for wanted in ("per service", "MTTA", "MTTR", "auto-remediated", "noisy", "AI latency",
                   "AI tokens", "Notification failures"):  # fmt: skip
        assert wanted in titles or any(wanted in json.dumps(p) for p in dashboard["panels"]), wanted
    # Every operator metric family is on it somewhere.
    from incident_operator import metrics

    shown = set().union(*(metric_names(expr) for expr in queries))
    assert {n for n in metrics.families() if not any(s.startswith(n) for s in shown)} == set()


def test_every_alert_names_an_exported_metric(helm: Path, tmp_path: Path) -> None:
    manifests = render(helm, values_file(tmp_path, {"prometheusRule": {"enabled": True}}))
    rules = find(manifests, "PrometheusRule", "io-incident-operator")["spec"]["groups"][0]["rules"]
    exported = exported_series()
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names and names <= exported, (rule["alert"], names - exported)
    shedding = next(r for r in rules if r["alert"] == "IncidentWebhookShedding")
    assert 'job="io-incident-operator-webhook"' in shedding["expr"]


# --- installed into the real API server ---------------------------------------


@dataclass
class Release:
    name: str
    namespace: str
    manifests: Manifests
    operator_kubeconfig: Path
    webhook_kubeconfig: Path
    ui_kubeconfig: Path
    ports: dict[str, int]


def fresh_namespace(api: client.ApiClient, prefix: str) -> str:
    name = f"{prefix}-{os.urandom(4).hex()}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def kubeconfig_for(
    plane: ControlPlane, api: client.ApiClient, namespace: str, account: str, directory: Path
) -> Path:
    """A kubeconfig for a ServiceAccount: what the kubelet would mount, via TokenRequest."""
    request = {"spec": {"expirationSeconds": 3600}}
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        account, namespace, request
    )
    kubeconfig = json.loads(plane.kubeconfig.read_text())
    kubeconfig["users"] = [{"name": account, "user": {"token": token.status.token}}]
    kubeconfig["contexts"][0]["context"]["user"] = account
    path = directory / f"{account}.kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    return path


def install(helm: Path, plane: ControlPlane, namespace: str, values_path: Path) -> None:
    run_helm(
        helm, "install", namespace, str(CHART), "-n", namespace, "-f", str(values_path),
        "--kubeconfig", str(plane.kubeconfig),
    )  # fmt: skip


@pytest.fixture(scope="module")
def release(
    helm: Path,
    control_plane: ControlPlane,
    api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Release:
    """The chart installed for one watched namespace, as a cautious user would."""
    namespace = fresh_namespace(api, "chart")
    directory = tmp_path_factory.mktemp("release")
    ports = {"webhook": free_port(), "liveness": free_port(), "ui": free_port()}
    values = {
        "watchNamespaces": [namespace],
        "operator": {"livenessPort": ports["liveness"]},
        "webhook": {"port": ports["webhook"], "ingress": {"enabled": True}},
        "ui": {
            "enabled": True,
            "port": ports["ui"],
            "tokens": {"existingSecret": "incident-ui-tokens"},
        },
        "config": {"TIMELINE_TABLE": "incident-timeline", "ECS_CLUSTER_NAME": "demo"},
    }
    # The Secret exists before the chart, as its values ask: two tokens, one per line.
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {"metadata": {"name": "incident-ingest-tokens"},
         "stringData": {"tokens": f"{new_token()}\n{new_token()}\n"}},
    )  # fmt: skip
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {"metadata": {"name": "incident-ui-tokens"}, "stringData": {"tokens": new_token()}},
    )
    values_path = values_file(directory, values)
    install(helm, control_plane, namespace, values_path)
    fullname = f"{namespace}-incident-operator"
    return Release(
        name=fullname,
        namespace=namespace,
        manifests=render(helm, values_path, release=namespace, namespace=namespace),
        operator_kubeconfig=kubeconfig_for(
            control_plane, api, namespace, f"{fullname}-operator", directory
        ),
        webhook_kubeconfig=kubeconfig_for(
            control_plane, api, namespace, f"{fullname}-webhook", directory
        ),
        ui_kubeconfig=kubeconfig_for(control_plane, api, namespace, f"{fullname}-ui", directory),
        ports=ports,
    )


def test_default_install_is_accepted(
    helm: Path, control_plane: ControlPlane, api: client.ApiClient, tmp_path: Path
) -> None:
    namespace = fresh_namespace(api, "chart-defaults")
    install(helm, control_plane, namespace, values_file(tmp_path, {}))
    apps = client.AppsV1Api(api)
    names = {d.metadata.name for d in apps.list_namespaced_deployment(namespace).items}
    assert names == {
        f"{namespace}-incident-operator-operator",
        f"{namespace}-incident-operator-webhook",
    }
    rbac = client.RbacAuthorizationV1Api(api)
    assert rbac.read_cluster_role(f"{namespace}-incident-operator-operator").rules


def test_install_created_every_object(release: Release, api: client.ApiClient) -> None:
    budget = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(
        f"{release.name}-operator", release.namespace
    )
    assert budget.spec.max_unavailable == 1
    service = client.CoreV1Api(api).read_namespaced_service(
        f"{release.name}-operator", release.namespace
    )
    assert service.spec.ports[0].name == "http"
    ingress = client.NetworkingV1Api(api).read_namespaced_ingress(
        f"{release.name}-webhook", release.namespace
    )
    assert ingress.spec.rules[0].host == "incidents.example.com"


# The Prometheus Operator's own CRDs, from its Go module (the project's
# toolchain fetches Go modules anyway): ServiceMonitors and PrometheusRules are
# checked against the real schemas.
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
MONITORING_CRDS = ("servicemonitors", "prometheusrules")


@pytest.fixture(scope="module")
def monitoring_crds(api: client.ApiClient, tmp_path_factory: pytest.TempPathFactory) -> None:
    go = shutil.which("go")
    assert go, "Go is needed to fetch the Prometheus Operator's CRDs (as for the control plane)"
    download = subprocess.run(
        [go, "mod", "download", "-json", PROMETHEUS_OPERATOR],
        capture_output=True, text=True, timeout=600, cwd=tmp_path_factory.mktemp("go"),
    )  # fmt: skip
    assert download.returncode == 0, download.stderr + download.stdout
    source = Path(json.loads(download.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    extensions = client.ApiextensionsV1Api(api)
    for plural in MONITORING_CRDS:
        definition = yaml.safe_load((source / f"monitoring.coreos.com_{plural}.yaml").read_text())
        try:
            extensions.create_custom_resource_definition(definition)
        except client.ApiException as error:
            assert error.status == 409, error.body  # installed by an earlier run of this module
        name = f"{plural}.monitoring.coreos.com"

        def established(name: str = name) -> bool:
            found = extensions.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in found)

        wait_for(f"CRD {name}", established, timeout=30)


def test_the_monitoring_objects_install_against_the_prometheus_operators_schemas(
    helm: Path,
    control_plane: ControlPlane,
    api: client.ApiClient,
    tmp_path: Path,
    monitoring_crds: None,
) -> None:
    namespace = fresh_namespace(api, "chart-monitoring")
    values = {
        "operator": {"serviceMonitor": {"enabled": True}},
        "webhook": {"serviceMonitor": {"enabled": True}},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
    install(helm, control_plane, namespace, values_file(tmp_path, values))
    custom = client.CustomObjectsApi(api)
    fullname = f"{namespace}-incident-operator"
    monitors = custom.list_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "servicemonitors"
    )["items"]
    assert {m["metadata"]["name"] for m in monitors} == {f"{fullname}-operator",
                                                         f"{fullname}-webhook"}  # fmt: skip
    rule = custom.get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "prometheusrules", fullname
    )
    assert len(rule["spec"]["groups"][0]["rules"]) == 6
    dashboard = client.CoreV1Api(api).read_namespaced_config_map(f"{fullname}-dashboard", namespace)
    assert dashboard.metadata.labels["grafana_dashboard"] == "1"
    assert json.loads(dashboard.data["incident-operator.json"])["panels"]


class LocalPod:
    """One container of the chart, run as a local process: its args, its env,
    its Secret volumes written to disk, and the ServiceAccount's credentials."""

    def __init__(
        self, *, release: Release, component: str, kubeconfig: Path, api: client.ApiClient,
        directory: Path, extra_env: dict[str, str],
    ) -> None:  # fmt: skip
        pod = pod_spec(release.manifests, component, release.name)
        spec = container(release.manifests, component, release.name)
        mounts = _materialize_secret_volumes(pod, spec, release.namespace, api, directory)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INGEST_"))}
        for entry in spec["env"]:
            value = entry.get("value")
            field = entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field == "metadata.name":  # the downward API: the pod's name
                value = f"{component}-local-pod"
            elif value is None:
                value = _secret_value(api, release.namespace, entry["valueFrom"]["secretKeyRef"])
            if value is None:
                continue  # an optional key that is absent: the kubelet leaves it unset
            for mount_path, local in mounts.items():
                value = value.replace(mount_path, str(local))
            env[entry["name"]] = value
        # Only the listen address differs from the chart: loopback, not every interface.
        args = [a.replace("0.0.0.0", "127.0.0.1") for a in spec["args"]]
        if component in ("webhook", "ui"):
            args += ["--host", "127.0.0.1"]
        self.log = directory / f"{component}.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "incident_operator.cli", *args],
                env={**env, "KUBECONFIG": str(kubeconfig), **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ok(self, url: str) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(url).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(url, answers, timeout=45)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _secret_value(api: client.ApiClient, namespace: str, ref: dict[str, Any]) -> str | None:
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(ref["name"], namespace)
    except client.ApiException as error:
        if error.status == 404 and ref.get("optional"):
            return None
        raise
    data = secret.data or {}
    if ref["key"] not in data:
        assert ref.get("optional"), f"Secret {ref['name']} has no key {ref['key']}"
        return None
    return base64.b64decode(data[ref["key"]]).decode()


def _materialize_secret_volumes(
    pod: dict[str, Any], spec: dict[str, Any], namespace: str, api: client.ApiClient,
    directory: Path,
) -> dict[str, Path]:  # fmt: skip
    """Write each Secret volume's items where the container mounts them; return
    {mountPath: local directory}."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounted: dict[str, Path] = {}
    for mount in spec.get("volumeMounts", []):
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        local = directory / mount["name"]
        local.mkdir(exist_ok=True)
        for item in source["items"]:
            ref = {"name": source["secretName"], "key": item["key"]}
            value = _secret_value(api, namespace, ref)
            assert value is not None
            (local / item["path"]).write_text(value)
        mounted[mount["mountPath"]] = local
    return mounted


@pytest.fixture
def pods(
    release: Release, api: client.ApiClient, aws: Aws, tmp_path: Path
) -> Iterator[dict[str, LocalPod]]:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    # What IRSA or Pod Identity would provide in a cluster: AWS credentials.
    aws_env = {
        "AWS_ENDPOINT_URL": aws.endpoint_url,
        "AWS_ACCESS_KEY_ID": aws.access_key,
        "AWS_SECRET_ACCESS_KEY": aws.secret_key,
    }
    started: dict[str, LocalPod] = {}
    try:
        for component, kubeconfig in [("operator", release.operator_kubeconfig),
                                      ("webhook", release.webhook_kubeconfig)]:  # fmt: skip
            started[component] = LocalPod(
                release=release, component=component, kubeconfig=kubeconfig, api=api,
                directory=tmp_path, extra_env=aws_env,
            )  # fmt: skip
        started["operator"].wait_ok(f"http://127.0.0.1:{release.ports['liveness']}/healthz")
        started["webhook"].wait_ok(f"http://127.0.0.1:{release.ports['webhook']}/readyz")
        yield started
    finally:
        for pod in started.values():
            pod.stop()


def test_an_alarm_goes_through_the_pipeline_with_the_charts_rights(
    release: Release, pods: dict[str, LocalPod], api: client.ApiClient, aws: Aws
) -> None:
    namespace = release.namespace
    token = _secret_value(api, namespace, {"name": "incident-ingest-tokens", "key": "tokens"})
    assert token is not None
    before = aws.primary()["id"]
    answer = httpx.post(
        f"http://127.0.0.1:{release.ports['webhook']}/alerts/cloudwatch",
        json=eventbridge_alarm("checkout-cpu-sev2", cluster="demo", region="us-east-1"),
        # The second token of the Secret: the file holds several, all valid.
        headers={"Authorization": f"Bearer {token.split()[1]}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    name = answer.json()["incidents"][0]["name"]
    _wait_phase(api, namespace, name, "AwaitingApproval", pods)
    # Approve as the webhook (a Slack button click is a status patch by the webhook).
    as_webhook = config.new_client_from_config(config_file=str(release.webhook_kubeconfig))
    with as_webhook:
        client.CustomObjectsApi(as_webhook).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "incidents", name,
            {"status": {"approval": {"state": "Approved", "by": "alice", "via": "slack"}}},
        )  # fmt: skip
    incident = _wait_phase(api, namespace, name, "Resolved", pods)
    assert incident["status"]["remediation"]["result"] == "Succeeded"
    assert aws.primary()["id"] != before
    reasons = {e.reason for e in events_for(api, namespace, name)}
    assert {"Triggered", "Assessed", "RestartSucceeded"} <= reasons
    # It led through the chart's Lease, as the pod it stands for.
    lease = client.CoordinationV1Api(api).read_namespaced_lease(
        f"{release.name}-operator", namespace
    )
    assert lease.spec.holder_identity == "operator-local-pod"
    # Nothing the operator does was refused (the Lease's watch included).
    for pod in pods.values():
        assert "Forbidden" not in pod.log.read_text()
        assert "may not watch the Lease" not in pod.log.read_text()


def _wait_phase(
    api: client.ApiClient, namespace: str, name: str, phase: str, pods: dict[str, LocalPod]
) -> dict[str, Any]:
    try:
        wait_for(f"{name} to reach {phase}", lambda: phase_of(api, namespace, name) == phase,
                 timeout=45)  # fmt: skip
    except AssertionError as error:
        log = pods["operator"].log.read_text()[-4000:]
        raise AssertionError(f"{error}\noperator log:\n{log}") from None
    return get_incident(api, namespace, name)


# --- least privilege ------------------------------------------------------------


def allowed(kubeconfig: Path, **attributes: str) -> bool:
    """What the API server says this identity may do (SelfSubjectAccessReview)."""
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        review = client.AuthorizationV1Api(api).create_self_subject_access_review(
            {"spec": {"resourceAttributes": attributes}}
        )
    return bool(review.status.allowed)


def incident_rights(namespace: str) -> dict[str, dict[str, str]]:
    def on(resource: str, verb: str, **more: str) -> dict[str, str]:
        return {"group": GROUP, "resource": resource, "verb": verb, "namespace": namespace, **more}

    return {
        "create incidents": on("incidents", "create"),
        "get incidents": on("incidents", "get"),
        "patch incidents": on("incidents", "patch"),
        "patch incidents/status": on("incidents", "patch", subresource="status"),
        "list incidents": on("incidents", "list"),
        "watch incidents": on("incidents", "watch"),
        "delete incidents": on("incidents", "delete"),
        "update incidents": on("incidents", "update"),
        "list responsepolicies": on("responsepolicies", "list"),
        "watch responsepolicies": on("responsepolicies", "watch"),
        "create responsepolicies": on("responsepolicies", "create"),
        "create events": {"resource": "events", "verb": "create", "namespace": namespace},
        "list events": {"resource": "events", "verb": "list", "namespace": namespace},
        "patch events": {"resource": "events", "verb": "patch", "namespace": namespace},
        "get secrets": {"resource": "secrets", "verb": "get", "namespace": namespace},
        "list secrets": {"resource": "secrets", "verb": "list", "namespace": namespace},
        "list pods": {"resource": "pods", "verb": "list", "namespace": namespace},
        "list incidents in default": {**on("incidents", "list"), "namespace": "default"},
        "create silences": on("silences", "create"),
        "get silences": on("silences", "get"),
        "list silences": on("silences", "list"),
        "watch silences": on("silences", "watch"),
        "update silences": on("silences", "update"),
        "patch silences": on("silences", "patch"),
        "delete silences": on("silences", "delete"),
        "patch silences/status": on("silences", "patch", subresource="status"),
        "create silences in default": {**on("silences", "create"), "namespace": "default"},
    }


# Not "patch incidents": the webhook never writes an Incident's spec or metadata.
# It reads the policies: alarms are grouped (a policy's grouping) where they arrive.
# "create silences": the Slack "Silence 1h" button; it reads or changes none.
WEBHOOK_MAY = {"create incidents", "get incidents", "patch incidents/status",
               "list responsepolicies", "watch responsepolicies", "create silences"}  # fmt: skip
# "delete incidents": a finished one, at the end of its retention; "delete
# silences": a day after one expired; it creates or edits none.
OPERATOR_MAY = {"get incidents", "list incidents", "watch incidents", "patch incidents/status",
                "delete incidents", "list responsepolicies", "watch responsepolicies",
                "create events", "get silences", "list silences", "watch silences",
                "delete silences", "patch silences/status"}  # fmt: skip
# The web UI reads: Incidents (a watch keeps its list live) and their Events.
UI_MAY = {"get incidents", "list incidents", "watch incidents", "list events"}


@pytest.mark.parametrize(
    ("component", "may"),
    [("webhook", WEBHOOK_MAY), ("operator", OPERATOR_MAY), ("ui", UI_MAY)],
)
def test_each_account_may_do_what_it_needs_and_nothing_more(
    release: Release, component: str, may: set[str]
) -> None:
    kubeconfig = getattr(release, f"{component}_kubeconfig")
    rights = incident_rights(release.namespace)
    granted = {what for what, attributes in rights.items() if allowed(kubeconfig, **attributes)}
    assert granted == may


def test_neither_account_can_read_secrets_and_the_webhook_cannot_delete(
    release: Release, api: client.ApiClient
) -> None:
    # Not only what the authorizer says: what the API server does.
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, release.namespace, "incidents",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Incident", "metadata": {"name": "victim"},
         "spec": {"source": "generic", "fingerprint": "victim", "title": "victim",
                  "service": {"name": "victim"}, "alarm": {"name": "victim"}}},
    )  # fmt: skip
    for kubeconfig in (
        release.webhook_kubeconfig, release.operator_kubeconfig, release.ui_kubeconfig
    ):  # fmt: skip
        with config.new_client_from_config(config_file=str(kubeconfig)) as identity:
            with pytest.raises(client.ApiException) as denied:
                client.CoreV1Api(identity).read_namespaced_secret(
                    "incident-ingest-tokens", release.namespace
                )
            assert denied.value.status == 403
    with config.new_client_from_config(config_file=str(release.webhook_kubeconfig)) as webhook:
        with pytest.raises(client.ApiException) as denied:
            client.CustomObjectsApi(webhook).delete_namespaced_custom_object(
                GROUP, VERSION, release.namespace, "incidents", "victim"
            )
        assert denied.value.status == 403
    assert custom.get_namespaced_custom_object(
        GROUP, VERSION, release.namespace, "incidents", "victim"
    )


def test_the_webhook_cannot_rewrite_an_incident_only_its_status(
    release: Release, api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, release.namespace, "incidents",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Incident", "metadata": {"name": "target"},
         "spec": {"source": "generic", "fingerprint": "target", "title": "target",
                  "service": {"name": "search", "cluster": "demo"}, "alarm": {"name": "t"}}},
    )  # fmt: skip
    rewrites = [
        {"spec": {"service": {"name": "checkout"}}},  # issue 12: redirect an approval
        {"metadata": {"labels": {"incident-response.dev/service": "checkout"}}},
        {"metadata": {"finalizers": ["example.com/keep"]}},
    ]
    with config.new_client_from_config(config_file=str(release.webhook_kubeconfig)) as webhook:
        as_webhook = client.CustomObjectsApi(webhook)
        for patch in rewrites:
            with pytest.raises(client.ApiException) as denied:
                as_webhook.patch_namespaced_custom_object(
                    GROUP, VERSION, release.namespace, "incidents", "target", patch
                )
            assert denied.value.status == 403, patch
        # What it does need still works: its status writes.
        as_webhook.patch_namespaced_custom_object_status(
            GROUP, VERSION, release.namespace, "incidents", "target",
            {"status": {"occurrences": 2}},
        )  # fmt: skip
    current = custom.get_namespaced_custom_object(
        GROUP, VERSION, release.namespace, "incidents", "target"
    )
    assert current["spec"]["service"] == {"name": "search", "cluster": "demo"}
    assert "incident-response.dev/service" not in current["metadata"].get("labels", {})
    assert "finalizers" not in current["metadata"]
    assert current["status"]["occurrences"] == 2


def test_the_operator_may_hold_its_one_lease_and_no_other(release: Release) -> None:
    def on(verb: str, name: str = "", namespace: str = release.namespace) -> dict[str, str]:
        return {"group": "coordination.k8s.io", "resource": "leases", "verb": verb,
                "namespace": namespace, **({"name": name} if name else {})}  # fmt: skip

    ours = f"{release.name}-operator"
    for verb in ("get", "update", "watch", "list"):
        assert allowed(release.operator_kubeconfig, **on(verb, ours)), verb
        assert not allowed(release.operator_kubeconfig, **on(verb, "kube-scheduler")), verb
    assert allowed(release.operator_kubeconfig, **on("create"))
    assert not allowed(release.operator_kubeconfig, **on("delete", ours))
    assert not allowed(release.operator_kubeconfig, **on("list"))  # all of them
    assert not allowed(release.operator_kubeconfig, **on("get", ours, "kube-system"))
    assert not allowed(release.webhook_kubeconfig, **on("get", ours))
    assert not allowed(release.ui_kubeconfig, **on("get", ours))


def test_the_ui_shows_an_incident_and_its_events_with_the_charts_rights(
    release: Release, api: client.ApiClient, aws: Aws, tmp_path: Path
) -> None:
    aws.timeline_table()
    namespace = release.namespace
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "incidents",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Incident", "metadata": {"name": "shown"},
         "spec": {"source": "generic", "fingerprint": "shown", "title": "shown on the UI",
                  "service": {"name": "search"}, "alarm": {"name": "shown"}}},
    )  # fmt: skip
    client.CoreV1Api(api).create_namespaced_event(
        namespace,
        {"metadata": {"name": "shown.event"}, "reason": "Triggered", "type": "Normal",
         "message": "an Event the UI reads", "firstTimestamp": created["metadata"][
             "creationTimestamp"],
         "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Incident",
                            "name": "shown", "namespace": namespace,
                            "uid": created["metadata"]["uid"]}},
    )  # fmt: skip
    aws_env = {"AWS_ENDPOINT_URL": aws.endpoint_url, "AWS_ACCESS_KEY_ID": aws.access_key,
               "AWS_SECRET_ACCESS_KEY": aws.secret_key}  # fmt: skip
    pod = LocalPod(
        release=release, component="ui", kubeconfig=release.ui_kubeconfig, api=api,
        directory=tmp_path, extra_env=aws_env,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{release.ports['ui']}"
        pod.wait_ok(f"{url}/readyz")
        token = _secret_value(api, namespace, {"name": "incident-ui-tokens", "key": "tokens"})
        assert httpx.get(f"{url}/").status_code == 401
        signed = {"Authorization": f"Bearer {token}"}
        assert "shown on the UI" in httpx.get(f"{url}/", headers=signed).text
        page = httpx.get(f"{url}/incidents/{namespace}/shown", headers=signed)
        assert page.status_code == 200
        assert "an Event the UI reads" in page.text
    finally:
        pod.stop()
    assert "Forbidden" not in pod.log.read_text()


# --- the IAM policy the docs ship -----------------------------------------------

# Creating the table is the administrator's job (the dev stack does it for itself).
SET_UP_ONLY = {"dynamodb:CreateTable", "dynamodb:DescribeTimeToLive", "dynamodb:UpdateTimeToLive"}
# Actions IAM authorizes on no resource type: a statement can only grant them on "*".
NO_RESOURCE_TYPES = {"cloudwatch:GetMetricData", "logs:GetQueryResults", "logs:StopQuery"}


def aws_operations_in_the_code() -> set[str]:
    """IAM actions for every ECS, DynamoDB, SES, CloudWatch and Logs operation the package calls."""
    import botocore.session

    session = botocore.session.get_session()
    actions: dict[str, str] = {}
    for service in ("ecs", "dynamodb", "ses", "cloudwatch", "logs"):
        for operation in session.get_service_model(service).operation_names:
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
            actions[snake] = f"{service}:{operation}"
    called: set[str] = set()
    package = REPO / "operator" / "incident_operator"
    for source in package.rglob("*.py"):
        if "devstack" in source.parts:
            continue
        text = source.read_text()
        names = re.findall(r"\.(\w+)\s*[(,]", text) + re.findall(r'get_paginator\("(\w+)"\)', text)
        called |= {actions[name] for name in names if name in actions}
    return called - SET_UP_ONLY


def test_the_iam_policy_allows_exactly_what_the_code_calls() -> None:
    policy = json.loads((REPO / "docs" / "iam-policy.json").read_text())
    granted = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        # "*" only where IAM has no resource to name (GetMetricData, GetQueryResults).
        assert statement["Resource"] != "*" or set(statement["Action"]) <= NO_RESOURCE_TYPES
        actions = statement["Action"]
        granted |= {actions} if isinstance(actions, str) else set(actions)
    assert granted == aws_operations_in_the_code()
