"""The phase machine, transition by transition (no cluster needed).

The ports here are small test doubles of *our own* interfaces (Assessor,
Remediator); the real implementations have their own tests against moto and
the fake Gemini server, and the operator tests run them together.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from builders import incident as incident_body
from incident_operator.models import (
    Assessment,
    Condition,
    Incident,
    RemediationPolicy,
    ResponsePolicySpec,
)
from incident_operator.policy import DEFAULT, Policy
from incident_operator.reconcile.phases import Ports, Transition, Wait, advance
from incident_operator.remediate import (
    RemediationFailed,
    RestartOutcomeUnknown,
    RestartReceipt,
    RestartRefused,
    Rollout,
    Target,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CHECKOUT = "eu-west-1/prod/checkout"  # the builders' Incident's canonical target


class ScriptedRemediator:
    def __init__(
        self, *, refuse: RemediationFailed | RestartRefused | None = None,
        rollout: Rollout = "Succeeded",
    ):  # fmt: skip
        self.restarts: list[tuple[str, Target]] = []
        self.refuse = refuse
        self.fail: str | None = None
        self.next_rollout: Rollout = rollout

    async def restart(
        self, *, incident_id: str, target: Target, limits: RemediationPolicy
    ) -> RestartReceipt:
        if self.refuse:
            raise self.refuse
        if self.fail:
            raise RemediationFailed(self.fail)
        self.restarts.append((incident_id, target))
        return RestartReceipt(deployment_id="ecs-svc/123", started_at=NOW)

    async def rollout(self, *, target: Target, deployment_id: str) -> Rollout:
        return self.next_rollout


def decided(action: str, decision: str = "SAFE") -> Any:
    async def assess(incident: Incident, policy: Policy) -> Assessment:
        return Assessment(
            decision=decision,  # type: ignore[arg-type]
            action=action,  # type: ignore[arg-type]
            message=f"{decision} {action}",
            confidence=0.9,
            assessor="rules",
            policy=policy.name,
        )

    return assess


def make(status: dict[str, Any] | None = None, **spec: Any) -> Incident:
    body = incident_body("checkout-abc", **spec)
    body["metadata"].update({"namespace": "prod", "uid": "u-1", "resourceVersion": "1"})
    body["status"] = {"occurrences": 1, "alarmState": "ALARM", **(status or {})}
    return Incident.model_validate(body)


def policy(**spec: Any) -> Policy:
    return Policy("p", ResponsePolicySpec.model_validate(spec))


async def step(
    incident: Incident, *, ports: Ports, policy: Policy = DEFAULT, now: datetime = NOW
) -> Transition | Wait | None:
    return await advance(incident, policy=policy, ports=ports, now=now)


def ports(assess: Any = None, remediator: ScriptedRemediator | None = None) -> Ports:
    return Ports(
        assess=assess or decided("restart_service"),
        remediator=remediator or ScriptedRemediator(),
        default_cluster="default-cluster",
    )


def conditions(transition: Transition) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in transition.conditions}


async def test_triggered_moves_to_assessing_and_records_receipt() -> None:
    result = await step(make({"phase": "Triggered"}), ports=ports())
    assert isinstance(result, Transition) and result.phase == "Assessing"
    assert conditions(result)["Assessed"] == ("Unknown", "Assessing")
    assert [r.kind for r in result.records] == ["received"]


async def test_restart_needing_approval_waits_for_it() -> None:
    result = await step(make({"phase": "Assessing"}), ports=ports())
    assert isinstance(result, Transition) and result.phase == "AwaitingApproval"
    approval = result.status["approval"]
    assert approval["required"] is True and approval["state"] == "Pending"
    assert approval["deadline"] == (NOW + timedelta(seconds=1800)).isoformat().replace(
        "+00:00", "Z"
    )
    assert result.status["assessment"]["action"] == "restart_service"
    assert result.wake_after == 1800
    assert conditions(result)["Assessed"] == ("True", "Safe")


async def test_restart_without_approval_records_the_intent_first() -> None:
    remediator = ScriptedRemediator()
    no_approval = policy(approval={"requiredFor": []})
    result = await step(
        make({"phase": "Assessing"}), ports=ports(remediator=remediator), policy=no_approval
    )
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert result.status["remediation"] == {
        "action": "restart_service",
        "target": CHECKOUT,
        "result": "Pending",
    }
    assert result.status["approval"]["action"] == "restart_service"
    assert result.status["approval"]["target"] == CHECKOUT
    assert remediator.restarts == []  # the intent is written before any action


@pytest.mark.parametrize(
    ("action", "decision", "phase", "kind"),
    [
        ("notify_team", "SAFE", "Escalated", "escalated"),
        ("restart_service", "ESCALATE", "Escalated", "escalated"),
        ("ignore", "SAFE", "Ignored", "ignored"),
    ],
)
async def test_assessment_outcomes(action: str, decision: str, phase: str, kind: str) -> None:
    result = await step(make({"phase": "Assessing"}), ports=ports(decided(action, decision)))
    assert isinstance(result, Transition) and result.phase == phase
    assert [r.kind for r in result.records] == ["assessment", kind]


async def test_restart_without_any_cluster_escalates() -> None:
    incident = make({"phase": "Assessing"}, service={"name": "checkout"})
    no_default = Ports(assess=decided("restart_service"), remediator=ScriptedRemediator())
    result = await step(incident, ports=no_default, policy=policy(approval={"requiredFor": []}))
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "NoTarget"
    assert "no ECS cluster" in result.records[-1].message


def awaiting(service: dict[str, Any] | None = None, **approval: Any) -> Incident:
    """An Incident whose restart of the builders' target waits for approval."""
    assessment = {
        "decision": "SAFE",
        "action": "restart_service",
        "message": "restart it",
        "confidence": 0.9,
        "assessor": "rules",
    }
    fields = {"required": True, "action": "restart_service", "target": CHECKOUT, **approval}
    # None leaves a field out, as an approval written by hand might.
    approval = {key: value for key, value in fields.items() if value is not None}
    status = {"phase": "AwaitingApproval", "assessment": assessment, "approval": approval}
    return make(status, **({"service": service} if service else {}))


async def test_pending_approval_waits_until_the_deadline() -> None:
    deadline = NOW + timedelta(minutes=10)
    incident = awaiting(state="Pending", deadline=deadline.isoformat())
    result = await step(incident, ports=ports())
    assert result == Wait(600.0)


async def test_approval_starts_the_remediation() -> None:
    incident = awaiting(state="Approved", by="U123", via="slack")
    result = await step(incident, ports=ports())
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert conditions(result)["Approved"] == ("True", "Approved")
    assert "U123 via slack" in result.records[0].message
    assert result.status["remediation"]["target"] == CHECKOUT


@pytest.mark.parametrize(
    ("approved", "service"),
    [
        # The spec was edited after the approval was asked for (the API
        # server refuses that now; this is the second line of defence).
        ({"target": CHECKOUT}, {"name": "payments", "cluster": "prod", "region": "eu-west-1"}),
        # An approval written by hand, naming no target.
        ({"target": None}, None),
        # Approved for another action than the one that would run.
        ({"action": "ignore"}, None),
    ],
)
async def test_an_approval_acts_only_on_what_it_approved(
    approved: dict[str, Any], service: dict[str, Any] | None
) -> None:
    remediator = ScriptedRemediator()
    incident = awaiting(service, state="Approved", by="U123", via="kubectl", **approved)
    result = await step(incident, ports=ports(remediator=remediator))
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "ApprovalMismatch"
    assert "remediation" not in result.status
    assert remediator.restarts == []


async def test_an_approved_action_the_policy_no_longer_allows_is_not_started() -> None:
    incident = awaiting(state="Approved", by="U123", via="slack")
    now_forbidden = policy(allowedActions=["notify_team", "ignore"])
    result = await step(incident, ports=ports(), policy=now_forbidden)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "ActionNotAllowed"
    assert "remediation" not in result.status


async def test_rejection_escalates_without_acting() -> None:
    remediator = ScriptedRemediator()
    incident = awaiting(state="Rejected", by="U9", via="slack")
    result = await step(incident, ports=ports(remediator=remediator))
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert conditions(result)["Approved"] == ("False", "Rejected")
    assert remediator.restarts == []


@pytest.mark.parametrize(
    ("on_timeout", "phase"),
    [("escalate", "Escalated"), ("approve", "Remediating"), ("ignore", "Ignored")],
)
async def test_expired_approval_follows_the_policy(on_timeout: str, phase: str) -> None:
    deadline = NOW - timedelta(seconds=1)
    incident = awaiting(state="Pending", deadline=deadline.isoformat())
    result = await step(incident, ports=ports(), policy=policy(approval={"onTimeout": on_timeout}))
    assert isinstance(result, Transition) and result.phase == phase
    assert result.status["approval"]["state"] == "Expired"
    assert result.status["approval"]["via"] == "timeout"


def remediating(result: str = "Pending", **extra: Any) -> Incident:
    return make(
        {
            "phase": "Remediating",
            "remediation": {
                "action": "restart_service",
                "target": CHECKOUT,
                "result": result,
                **extra,
            },
        }
    )


async def test_remediation_restarts_once_and_records_the_deployment() -> None:
    remediator = ScriptedRemediator()
    result = await step(remediating(), ports=ports(remediator=remediator))
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert remediator.restarts == [
        ("prod/checkout-abc", Target(region="eu-west-1", cluster="prod", service="checkout"))
    ]
    assert result.status["remediation"]["result"] == "InProgress"
    assert result.status["remediation"]["deploymentId"] == "ecs-svc/123"
    assert [r.kind for r in result.records] == ["action_started"]
    assert result.wake_after


@pytest.mark.parametrize(
    ("rollout", "phase", "result_"),
    [("Succeeded", "Resolved", "Succeeded"), ("Failed", "Escalated", "Failed")],
)
async def test_rollout_outcome(rollout: Rollout, phase: str, result_: str) -> None:
    remediator = ScriptedRemediator(rollout=rollout)
    incident = remediating("InProgress", deploymentId="d-1", startedAt=NOW.isoformat())
    result = await step(incident, ports=ports(remediator=remediator))
    assert isinstance(result, Transition) and result.phase == phase
    assert result.status["remediation"]["result"] == result_
    assert remediator.restarts == []


async def test_rollout_in_progress_waits_then_times_out() -> None:
    remediator = ScriptedRemediator(rollout="InProgress")
    incident = remediating("InProgress", deploymentId="d-1", startedAt=NOW.isoformat())
    assert isinstance(await step(incident, ports=ports(remediator=remediator)), Wait)
    late = NOW + timedelta(seconds=601)
    result = await step(incident, ports=ports(remediator=remediator), now=late)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.status["remediation"]["result"] == "TimedOut"


async def test_refused_restart_escalates_with_the_reason() -> None:
    refused = RestartRefused("Cooldown", "checkout restarted 3 minutes ago")
    result = await step(remediating(), ports=ports(remediator=ScriptedRemediator(refuse=refused)))
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.status["remediation"]["result"] == "Refused"
    assert conditions(result)["Remediated"] == ("False", "Cooldown")


async def test_unknown_restart_outcome_is_asked_again_not_escalated() -> None:
    remediator = ScriptedRemediator()
    remediator.refuse = RestartOutcomeUnknown("UpdateService timed out")
    incident = remediating()
    incident.status.conditions = []
    assert await step(incident, ports=ports(remediator=remediator)) == Wait(10.0)
    late = NOW + timedelta(seconds=601)
    intent = Condition(
        type="Remediated", status="Unknown", reason="Pending", last_transition_time=NOW
    )
    incident.status.conditions = [intent]
    result = await step(incident, ports=ports(remediator=remediator), now=late)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert conditions(result)["Remediated"] == ("False", "OutcomeUnknown")


async def test_failed_restart_escalates() -> None:
    remediator = ScriptedRemediator()
    remediator.fail = "ServiceNotFoundException"
    result = await step(remediating(), ports=ports(remediator=remediator))
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.status["remediation"]["result"] == "Failed"


@pytest.mark.parametrize("phase", ["Triggered", "Assessing", "AwaitingApproval", "Escalated"])
async def test_recovery_resolves_an_open_incident(phase: str) -> None:
    remediator = ScriptedRemediator()
    incident = make({"phase": phase, "alarmState": "OK"})
    result = await step(incident, ports=ports(remediator=remediator))
    assert isinstance(result, Transition) and result.phase == "Resolved"
    assert conditions(result)["Resolved"] == ("True", "AlarmRecovered")
    assert remediator.restarts == []


async def test_a_remediation_whose_target_changed_is_not_carried_out() -> None:
    remediator = ScriptedRemediator()
    incident = remediating()
    assert incident.status.remediation is not None
    incident.status.remediation.target = "eu-west-1/prod/payments"
    result = await step(incident, ports=ports(remediator=remediator))
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "TargetChanged"
    assert remediator.restarts == []


async def test_recovery_cancels_a_pending_approval() -> None:
    deadline = NOW + timedelta(minutes=10)
    incident = awaiting(state="Pending", deadline=deadline.isoformat())
    incident.status.alarm_state = "OK"
    result = await step(incident, ports=ports())
    assert isinstance(result, Transition) and result.phase == "Resolved"
    assert result.status["approval"]["state"] == "Cancelled"
    assert result.status["approval"]["target"] == CHECKOUT
    assert conditions(result)["Approved"] == ("False", "Cancelled")


ARN = "arn:aws:ecs:eu-west-1:123456789012:service/prod/checkout"


@pytest.mark.parametrize(
    "service",
    [
        {"name": ARN},
        {"name": ARN, "cluster": "prod"},
        {"name": ARN, "cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/prod"},
        {"name": "arn:aws:ecs:eu-west-1:123456789012:service/checkout", "cluster": "prod"},
        {"name": "checkout", "cluster": "prod", "region": "eu-west-1"},
    ],
)
async def test_every_alias_of_a_service_is_one_target(service: dict[str, Any]) -> None:
    no_approval = policy(approval={"requiredFor": []})
    result = await step(
        make({"phase": "Assessing"}, service=service), ports=ports(), policy=no_approval
    )
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert result.status["remediation"]["target"] == CHECKOUT


@pytest.mark.parametrize(
    ("service", "why"),
    [
        ({"name": ARN, "cluster": "staging"}, "2 different clusters"),
        ({"name": ARN, "region": "us-east-1"}, "2 different regions"),
        ({"name": "arn:aws:ecs:eu-west-1:123456789012:task/prod/1"}, "not an ECS service ARN"),
        ({"name": "arn:aws:ecs:eu-west-1:123456789012:service/a/b/c"}, "not an ECS service ARN"),
        ({"name": "check out", "cluster": "prod"}, "not an ECS name"),
        ({"name": "checkout", "cluster": "prod", "region": "moon-1"}, "not an AWS region"),
        ({"name": "AWS/RDS", "platform": "none"}, "names no ECS service"),
    ],
)
async def test_a_target_that_does_not_resolve_is_never_acted_on(
    service: dict[str, Any], why: str
) -> None:
    remediator = ScriptedRemediator()
    no_approval = policy(approval={"requiredFor": []})
    result = await step(
        make({"phase": "Assessing"}, service=service),
        ports=ports(remediator=remediator),
        policy=no_approval,
    )
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "NoTarget"
    assert why in result.records[-1].message
    assert "remediation" not in result.status and "approval" not in result.status


async def test_recovery_during_a_restart_lets_it_finish() -> None:
    remediator = ScriptedRemediator()
    incident = remediating()
    incident.status.alarm_state = "OK"
    result = await step(incident, ports=ports(remediator=remediator))
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert len(remediator.restarts) == 1


@pytest.mark.parametrize("phase", ["Resolved", "Failed", "Escalated", "Ignored"])
async def test_finished_incidents_are_left_alone(phase: str) -> None:
    assert await step(make({"phase": phase}), ports=ports()) is None
