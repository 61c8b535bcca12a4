"""The chart as files and as rendered manifests: what the chart tests share.

A pytest plugin (see conftest.py), so `helm` and `kube_score` are fixtures
wherever they are asked for; each is built into the cache the first time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from incident_operator.devstack.helm import ensure_helm
from incident_operator.devstack.kubescore import ensure_kube_score

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "incident-operator"

Manifests = list[dict[str, Any]]


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm()


@pytest.fixture(scope="session")
def kube_score() -> Path:
    return ensure_kube_score()


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def values_file(directory: Path, values: dict[str, Any]) -> Path:
    path = directory / f"values-{len(list(directory.glob('values-*')))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(
    helm: Path, values_path: Path, *, release: str = "io", namespace: str = "ops"
) -> Manifests:
    out = run_helm(helm, "template", release, str(CHART), "-n", namespace, "-f", str(values_path))
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(
    manifests: Manifests, kind: str, name: str, namespace: str | None = None
) -> dict[str, Any]:
    (found,) = [
        m for m in manifests
        if m["kind"] == kind and m["metadata"]["name"] == name
        and namespace in (None, m["metadata"].get("namespace"))
    ]  # fmt: skip
    return found


def kinds(manifests: Manifests) -> set[str]:
    return {m["kind"] for m in manifests}


def pod_spec(manifests: Manifests, component: str, fullname: str = "io-incident-operator") -> Any:
    return find(manifests, "Deployment", f"{fullname}-{component}")["spec"]["template"]["spec"]


def container(manifests: Manifests, component: str, fullname: str = "io-incident-operator") -> Any:
    return pod_spec(manifests, component, fullname)["containers"][0]
