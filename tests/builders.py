"""Objects for tests, valid unless a test says otherwise."""

from __future__ import annotations

import copy
from typing import Any

from incident_operator.models import API_VERSION


def incident(name: str = "checkout-cpu-high", **spec_overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Incident",
        "metadata": {"name": name},
        "spec": {
            "source": "cloudwatch",
            "fingerprint": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:checkout-cpu-high",
            "title": "checkout CPU above 90%",
            "summary": "CPUUtilization > 90 for 3 datapoints",
            "severity": "high",
            "service": {"name": "checkout", "cluster": "prod", "region": "eu-west-1"},
            "alarm": {"name": "checkout-cpu-high", "state": "ALARM", "metric": "CPUUtilization"},
        },
    }
    merged = copy.deepcopy(body)
    merged["spec"].update(spec_overrides)
    return merged
