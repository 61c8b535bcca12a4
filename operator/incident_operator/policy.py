"""Which ResponsePolicy applies to an Incident.

A policy matches when every criterion it gives holds (service-name globs,
severities, labels). Among matches the most specific wins: more criteria
first, then the longest service glob without wildcards (an exact name beats
`checkout-*` beats `*`), then the name, so the choice is deterministic. With
no match the built-in default applies: rules assessor, every action needs
approval, notify every configured channel.

Service globs match the service's canonical name (`remediate/target.py`),
so an alarm that names a service by its ARN gets the same policy as one that
names it plainly.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from .models import IncidentSpec, ResponsePolicySpec
from .remediate.target import service_name

DEFAULT_POLICY_NAME = "built-in-default"


@dataclass(frozen=True)
class Policy:
    name: str
    spec: ResponsePolicySpec


DEFAULT = Policy(DEFAULT_POLICY_NAME, ResponsePolicySpec())


def attribute(alarm: IncidentSpec, name: str) -> str:
    """An alarm's attribute by name, as groupings and silence matchers name them:
    service (its canonical name), cluster, source, severity, alarm (its name),
    or else a label or a metric dimension; "" when it has none."""
    if name == "service":
        return service_name(alarm.service)
    if name == "cluster":
        return alarm.service.cluster or ""
    if name == "source":
        return alarm.source
    if name == "severity":
        return alarm.severity
    if name == "alarm":
        return alarm.alarm.name
    return alarm.labels.get(name) or alarm.alarm.dimensions.get(name) or ""


def matches(policy: ResponsePolicySpec, incident: IncidentSpec) -> bool:
    match = policy.match
    service = service_name(incident.service)
    if match.services and not any(
        fnmatch.fnmatchcase(service, pattern) for pattern in match.services
    ):
        return False
    if match.severities and incident.severity not in match.severities:
        return False
    return all(incident.labels.get(key) == value for key, value in match.labels.items())


def _narrowness(pattern: str) -> int:
    """How narrow a service glob is: an exact name beats every glob; among
    globs, more literal characters means narrower (`checkout-*` beats `*`)."""
    if not any(c in pattern for c in "*?["):
        return 10_000 + len(pattern)
    return len(pattern) - sum(pattern.count(c) for c in "*?")


def _rank(policy: Policy, incident: IncidentSpec) -> tuple[int, int, str]:
    """Sort key: the most specific policy first, then by name."""
    match = policy.spec.match
    criteria = bool(match.services) + bool(match.severities) + len(match.labels)
    service = service_name(incident.service)
    narrowest = max(
        (
            _narrowness(pattern)
            for pattern in match.services
            if fnmatch.fnmatchcase(service, pattern)
        ),
        default=-1,
    )
    return (-criteria, -narrowest, policy.name)


def select(policies: Iterable[Policy], incident: IncidentSpec) -> Policy:
    candidates = [policy for policy in policies if matches(policy.spec, incident)]
    if not candidates:
        return DEFAULT
    return min(candidates, key=lambda policy: _rank(policy, incident))
