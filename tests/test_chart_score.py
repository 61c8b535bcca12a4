"""The chart against a best-practice checker: kube-score finds nothing in it
beyond what charts/incident-operator/kube-score.yaml leaves out, each with its
reason, with the default values and with a production-like values file; and
the hardening it asks for is there: NetworkPolicies for both pods, a
PodDisruptionBudget for the webhook, its replicas spread over zones and nodes,
ephemeral-storage requests and limits for every container.

No API server is needed: kube-score reads `helm template` output offline.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_support import CHART, Manifests, find, kinds, pod_spec, render, values_file

IGNORES: list[dict[str, str]] = yaml.safe_load((CHART / "kube-score.yaml").read_text())["ignore"]
PRODUCTION = CHART / "ci" / "production-values.yaml"
# kube-score's grades: 1 CRITICAL, 5 WARNING, 7 almost OK, 10 OK.
GRADES = {1: "CRITICAL", 5: "WARNING", 7: "ALMOST OK"}


def lowest_kubernetes() -> str:
    """The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), as vN.NN."""
    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    found = re.search(r">=\s*(\d+)\.(\d+)", floor)
    assert found, floor
    return f"v{found[1]}.{found[2]}"


@dataclass(frozen=True)
class Finding:
    object: str
    check: str
    grade: str
    says: str

    def __str__(self) -> str:
        return f"{self.grade} {self.object}: {self.check}: {self.says}"


def arguments(ignores: list[dict[str, str]]) -> list[str]:
    flags = []
    for entry in ignores:
        flags += [entry["flag"]] if "flag" in entry else ["--ignore-test", entry["test"]]
    return flags


def score(kube_score: Path, rendered: Path, ignores: list[dict[str, str]]) -> list[Finding]:
    result = subprocess.run(
        [str(kube_score), "score", str(rendered), "--output-format", "json",
         "--kubernetes-version", lowest_kubernetes(), *arguments(ignores)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # 1 when there is a CRITICAL finding; anything else is kube-score failing.
    assert result.returncode in (0, 1) and not result.stderr, result.stderr
    findings = []
    for scored in json.loads(result.stdout):
        for check in scored["checks"]:
            if check["skipped"] or check["grade"] >= 10:
                continue
            says = "; ".join(
                f"{c['path'] + ': ' if c['path'] else ''}{c['summary']}"
                for c in check["comments"] or []
            )
            findings.append(
                Finding(scored["object_name"], check["check"]["id"],
                        GRADES.get(check["grade"], str(check["grade"])), says)
            )  # fmt: skip
    return findings


def rendered_file(helm: Path, tmp_path: Path, values_path: Path) -> tuple[Path, Manifests]:
    manifests = render(helm, values_path)
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    return path, manifests


@pytest.fixture(params=["default", "production"])
def rendered(request: pytest.FixtureRequest, helm: Path, tmp_path: Path) -> tuple[Path, Manifests]:
    values = values_file(tmp_path, {}) if request.param == "default" else PRODUCTION
    return rendered_file(helm, tmp_path, values)


def test_every_ignore_says_why() -> None:
    assert IGNORES
    for entry in IGNORES:
        assert ("test" in entry) != ("flag" in entry), entry
        assert len(entry.get("why", "").split()) >= 10, f"say why {entry} is ignored"


def test_kube_score_finds_nothing_beyond_the_documented_ignores(
    kube_score: Path, rendered: tuple[Path, Manifests]
) -> None:
    path, _ = rendered
    findings = score(kube_score, path, IGNORES)
    assert not findings, "kube-score findings not in kube-score.yaml:\n" + "\n".join(
        map(str, findings)
    )


def test_every_ignore_is_still_needed(kube_score: Path, helm: Path, tmp_path: Path) -> None:
    """An ignore that no longer silences anything is taken out, not left to
    hide a future regression."""
    path, _ = rendered_file(helm, tmp_path, values_file(tmp_path, {}))
    for entry in IGNORES:
        others = [e for e in IGNORES if e is not entry]
        assert score(kube_score, path, others), f"{entry} silences nothing: remove it"


def test_both_pods_have_network_policies_in_and_out(rendered: tuple[Path, Manifests]) -> None:
    _, manifests = rendered
    ports = {"webhook": 8080, "operator": 8081}
    for component, port in ports.items():
        policy = find(manifests, "NetworkPolicy", f"io-incident-operator-{component}")["spec"]
        labels = pod_spec_labels(manifests, component)
        assert policy["podSelector"]["matchLabels"].items() <= labels.items()
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        # In: the one port, nothing else.
        (ingress,) = policy["ingress"]
        assert ingress["ports"] == [{"protocol": "TCP", "port": port}]
        # Out: DNS, the API server, HTTPS.
        egress_ports = {(p["protocol"], p["port"]) for rule in policy["egress"]
                        for p in rule["ports"]}  # fmt: skip
        assert {("UDP", 53), ("TCP", 53), ("TCP", 443)} <= egress_ports


def pod_spec_labels(manifests: Manifests, component: str) -> dict[str, str]:
    deployment = find(manifests, "Deployment", f"io-incident-operator-{component}")
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_the_webhook_has_a_disruption_budget_and_spreads_over_zones_and_nodes(
    rendered: tuple[Path, Manifests],
) -> None:
    _, manifests = rendered
    budget = find(manifests, "PodDisruptionBudget", "io-incident-operator-webhook")
    assert budget["spec"]["maxUnavailable"] == 1
    assert (
        budget["spec"]["selector"]["matchLabels"].items()
        <= pod_spec_labels(manifests, "webhook").items()
    )
    spread = pod_spec(manifests, "webhook")["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"
    ]  # fmt: skip
    for constraint in spread:
        # Never DoNotSchedule: with fewer nodes than replicas (a one-node
        # cluster) the other replicas must still run.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["maxSkew"] == 1
        selector = constraint["labelSelector"]["matchLabels"]
        assert selector.items() <= pod_spec_labels(manifests, "webhook").items()


def test_every_container_requests_and_limits_ephemeral_storage(
    rendered: tuple[Path, Manifests],
) -> None:
    _, manifests = rendered
    for component in ("operator", "webhook"):
        for container in pod_spec(manifests, component)["containers"]:
            resources = container["resources"]
            assert resources["requests"]["ephemeral-storage"], component
            assert resources["limits"]["ephemeral-storage"], component


def test_the_operator_is_ready_for_its_service_when_metrics_answer(
    rendered: tuple[Path, Manifests],
) -> None:
    _, manifests = rendered
    (operator,) = pod_spec(manifests, "operator")["containers"]
    assert operator["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": "http"}


# --- the switches -------------------------------------------------------------


def test_network_policies_switch_off(helm: Path, tmp_path: Path) -> None:
    manifests = render(helm, values_file(tmp_path, {"networkPolicy": {"enabled": False}}))
    assert "NetworkPolicy" not in kinds(manifests)


def test_egress_narrows_and_widens_as_the_values_say(helm: Path, tmp_path: Path) -> None:
    proxy = {"to": [{"ipBlock": {"cidr": "10.20.0.15/32"}}],
             "ports": [{"protocol": "TCP", "port": 3128}]}  # fmt: skip
    kube_dns: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    values = {
        "networkPolicy": {
            "dns": {"to": [kube_dns]},
            "apiServer": {"ports": [6443], "cidrs": ["10.0.0.0/24"]},
            "integrations": {"ports": [443], "cidrs": ["203.0.113.0/24", "2001:db8::/32"]},
            "extraEgress": [proxy],
            "operator": {"from": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]},
        }
    }
    manifests = render(helm, values_file(tmp_path, values))
    for component in ("operator", "webhook"):
        dns, api, integrations, extra = find(
            manifests, "NetworkPolicy", f"io-incident-operator-{component}"
        )["spec"]["egress"]
        assert dns["to"] == [kube_dns]
        assert api == {"ports": [{"protocol": "TCP", "port": 6443}],
                       "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}  # fmt: skip
        assert integrations["to"] == [
            {"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}
        ]  # fmt: skip
        assert extra == proxy
    operator_in = find(manifests, "NetworkPolicy", "io-incident-operator-operator")["spec"]
    assert operator_in["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}
    ]
    # The webhook still takes alarms from anyone: only the operator was narrowed.
    webhook_in = find(manifests, "NetworkPolicy", "io-incident-operator-webhook")["spec"]
    assert "from" not in webhook_in["ingress"][0]


def test_the_webhook_budget_and_spread_follow_the_values(helm: Path, tmp_path: Path) -> None:
    selector = {"matchLabels": {"app.kubernetes.io/component": "webhook"}}
    own = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": selector}]  # fmt: skip
    values = {"webhook": {"podDisruptionBudget": {"enabled": False},
                          "topologySpreadConstraints": own}}  # fmt: skip
    manifests = render(helm, values_file(tmp_path, values))
    assert "io-incident-operator-webhook" not in {
        m["metadata"]["name"] for m in manifests if m["kind"] == "PodDisruptionBudget"
    }
    assert pod_spec(manifests, "webhook")["topologySpreadConstraints"] == own
