"""Incidents as the notifier sees them, and a notifier over given channels."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from builders import incident as incident_body
from incident_operator.models import Incident, ResponsePolicySpec
from incident_operator.notify.channel import Channel
from incident_operator.notify.fanout import FanOutNotifier
from incident_operator.policy import DEFAULT, Policy

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def incident(
    *, uid: str | None = None, namespace: str = "shop", name: str = "checkout-3f1c2a9b0d4e",
    **status: Any,
) -> Incident:  # fmt: skip
    """An Incident with metadata as the API server gives it, and `status` (camelCase)."""
    body = incident_body(name)
    body["metadata"].update(
        uid=uid or str(uuid.uuid4()),
        namespace=namespace,
        creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        resourceVersion="1",
    )
    body["status"] = status
    return Incident.model_validate(body)


def moved(previous: Incident, **status: Any) -> Incident:
    """The same Incident after a transition: its status updated by `status`."""
    return Incident.model_validate(
        {**previous.to_api(), "status": {**previous.status.to_api(), **status}}
    )


def transition(phase: str, *records: tuple[str, str, str]) -> dict[str, Any]:
    """status fields for a transition to `phase` recording (kind, reason, message)."""
    return {
        "phase": phase,
        "lastTransition": {
            "at": NOW.isoformat(),
            "phase": phase,
            "records": [{"kind": k, "reason": r, "message": m} for k, r, m in records],
        },
    }


def assessed(decision: str = "SAFE", action: str = "restart_service") -> dict[str, Any]:
    return {
        "decision": decision,
        "action": action,
        "message": "CPU saturation; a restart should clear it",
        "confidence": 0.9,
        "assessor": "rules",
    }


def policy(**notify: Any) -> Policy:
    if not notify:
        return DEFAULT
    return Policy("test-policy", ResponsePolicySpec.model_validate({"notify": notify}))


def notifier(
    *channels: Channel, attempts: int = 3, timeout: float = 10.0, **kw: Any
) -> FanOutNotifier:
    return FanOutNotifier(
        channels,
        timeout=timeout,
        attempts=attempts,
        breaker_failures=kw.pop("breaker_failures", 3),
        breaker_cooloff=kw.pop("breaker_cooloff", 60.0),
        backoff=0.01,
        **kw,
    )
