"""Remediation: act on the service behind an Incident.

One interface, one implementation per action kind (today: restart an ECS
service). Every action is at most once per Incident, even across crashes
and replicas, and bounded per service by the policy's cooldown and hourly
cap; both are enforced with DynamoDB conditional writes (see `claims.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from ..aws import explain, transient
from ..models import RemediationPolicy
from .target import Target, UnresolvedTarget, resolve

__all__ = [
    "RemediationFailed",
    "Remediator",
    "RestartOutcomeUnknown",
    "RestartReceipt",
    "RestartRefused",
    "Rollout",
    "Target",
    "UnresolvedTarget",
    "aws_failure",
    "resolve",
]

Rollout = Literal["InProgress", "Succeeded", "Failed"]


@dataclass(frozen=True)
class RestartReceipt:
    deployment_id: str
    started_at: datetime
    # True when this call found the restart already done for this Incident
    # (a retry after a crash) and did not restart again.
    reused: bool = False


class RestartRefused(Exception):
    """The policy's cooldown or hourly cap forbids a restart now, or the target
    is in another AWS account than the operator's."""

    def __init__(
        self, reason: Literal["Cooldown", "HourlyCap", "OtherAccount"], message: str
    ) -> None:
        super().__init__(message)
        self.reason = reason


class RemediationFailed(Exception):
    """The action could not be carried out (AWS error, unknown service...)."""


class RestartOutcomeUnknown(RemediationFailed):
    """Not settled yet: no answer from ECS, a concurrent attempt, or AWS
    failing for now (throttled, a 5xx). The claim is kept; calling `restart`
    (or `rollout`) again later settles it, adopting the restart or performing
    it, never twice."""


class Remediator(Protocol):
    async def restart(
        self, *, incident_id: str, target: Target, limits: RemediationPolicy
    ) -> RestartReceipt: ...

    async def rollout(self, *, target: Target, deployment_id: str) -> Rollout: ...


def aws_failure(error: ClientError | BotoCoreError, *, doing: str) -> RemediationFailed:
    """The exception for a failed AWS call: a transient one is asked again
    later (RestartOutcomeUnknown: every step can be), any other is final."""
    if transient(error):
        return RestartOutcomeUnknown(explain(error, doing=doing) + " (will try again)")
    return RemediationFailed(explain(error, doing=doing))
