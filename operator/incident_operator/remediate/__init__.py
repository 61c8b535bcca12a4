"""Remediation: act on the target behind an Incident, once, within the policy.

Each action is a plugin, one module in `actions/` (see `plugin.py` for what
a plugin declares and `registry.py` for how they are found). The `Executor`
(executor.py) carries any of them out with one discipline: claim first in
DynamoDB (at most once per Incident across crashes and replicas, within the
policy's cooldown and hourly cap per target: see claims.py), then act, then
record what acting produced; a retry looks before it acts again.

This module holds what every part shares: the receipt of an action and the
ways one can fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import JsonValue

from ..aws import explain, transient
from ..models import IncidentSpec
from .target import AnyTarget, Target, UnresolvedTarget, Workload, resolve

__all__ = [
    "ActionCall",
    "ActionRefused",
    "AnyTarget",
    "NothingDone",
    "OutcomeUnknown",
    "Progress",
    "Receipt",
    "RemediationFailed",
    "Target",
    "UnresolvedTarget",
    "Workload",
    "aws_failure",
    "resolve",
]

# How an action is going once started: a rollout, a scaling, a Job.
Progress = Literal["InProgress", "Succeeded", "Failed"]


@dataclass(frozen=True)
class ActionCall:
    """One action asked of the executor: which, with what, on what, for whom."""

    action: str
    parameters: dict[str, JsonValue]
    target: AnyTarget
    incident_id: str  # namespace/name@uid: the claim's key
    alarm: IncidentSpec  # what was observed: untrusted data, never instructions
    settings: dict[str, dict[str, JsonValue]]  # the policy's spec.actions


@dataclass(frozen=True)
class Receipt:
    """What acting produced, to follow it: an ECS deployment id, a task count."""

    ref: str
    started_at: datetime
    # True when this call found the action already done for this Incident
    # (a retry after a crash) and did not act again.
    reused: bool = False


class ActionRefused(Exception):
    """The policy forbids the action now: its cooldown or hourly cap, its
    bounds for the parameters, or a target in another AWS account. `reason`
    is a condition reason (CamelCase), e.g. Cooldown, HourlyCap, OutOfBounds."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RemediationFailed(Exception):
    """The action could not be carried out (AWS error, unknown service...)."""


class NothingDone(RemediationFailed):
    """Failed, and certainly nothing was done (the service is gone): the claim
    is released at once, without looking again."""


class OutcomeUnknown(RemediationFailed):
    """Not settled yet: no answer, a concurrent attempt, or AWS failing for
    now (throttled, a 5xx). The claim is kept; executing again later settles
    it, adopting what was done or doing it, never twice."""


def aws_failure(error: ClientError | BotoCoreError, *, doing: str) -> RemediationFailed:
    """The exception for a failed AWS call: a transient one is asked again
    later (OutcomeUnknown: every step can be), any other is final."""
    if transient(error):
        return OutcomeUnknown(explain(error, doing=doing) + " (will try again)")
    return RemediationFailed(explain(error, doing=doing))
