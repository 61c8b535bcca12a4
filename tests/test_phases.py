"""The phase machine, transition by transition: pure decisions, no ports, no fakes.

`decide()` is a function of the Incident, its policy, the time and the facts
gathered for it (an assessment, what executing the action came to, how its
rollout is going); each test hands it those and reads the transition. The
few tests at the end check the other two steps of a pass: `wants()` (which
intent the next decision needs) and `gather()` (carrying it out through the
ports, with small stand-ins of our own interfaces).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from builders import incident as incident_body
from incident_operator.models import (
    Acknowledgement,
    AlertEntry,
    Assessment,
    Condition,
    Incident,
    RemediationPolicy,
    ResponsePolicySpec,
)
from incident_operator.policy import DEFAULT, Policy
from incident_operator.reconcile.phases import (
    AssessIt,
    Defaults,
    Execute,
    Facts,
    Ports,
    Transition,
    Verify,
    Wait,
    advance,
    decide,
    gather,
    wants,
)
from incident_operator.remediate import (
    ActionCall,
    ActionRefused,
    OutcomeUnknown,
    Progress,
    Receipt,
    RemediationFailed,
    Target,
    Workload,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
CHECKOUT = "eu-west-1/prod/checkout"  # the builders' Incident's canonical target
DEFAULTS = Defaults(cluster="default-cluster", region="us-east-1")
RECEIPT = Receipt(ref="ecs-svc/123", started_at=NOW)
NOTHING = Facts()  # nothing gathered


def assessed(action: str = "restart_service", decision: str = "SAFE") -> Facts:
    return Facts(
        assessment=Assessment(
            decision=decision,  # type: ignore[arg-type]
            action=action,  # type: ignore[arg-type]
            message=f"{decision} {action}",
            confidence=0.9,
            assessor="rules",
            policy="p",
        )
    )


def make(status: dict[str, Any] | None = None, **spec: Any) -> Incident:
    body = incident_body("checkout-abc", **spec)
    body["metadata"].update({"namespace": "prod", "uid": "u-1", "resourceVersion": "1"})
    body["status"] = {"occurrences": 1, "alarmState": "ALARM", **(status or {})}
    return Incident.model_validate(body)


def policy(**spec: Any) -> Policy:
    return Policy("p", ResponsePolicySpec.model_validate(spec))


def step(
    incident: Incident,
    facts: Facts = NOTHING,
    *,
    policy: Policy = DEFAULT,
    now: datetime = NOW,
    defaults: Defaults = DEFAULTS,
) -> Transition | Wait | None:
    return decide(incident, policy=policy, now=now, facts=facts, defaults=defaults)


def conditions(transition: Transition) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in transition.conditions}


def test_triggered_moves_to_assessing_and_records_receipt() -> None:
    result = step(make({"phase": "Triggered"}))
    assert isinstance(result, Transition) and result.phase == "Assessing"
    assert conditions(result)["Assessed"] == ("Unknown", "Assessing")
    assert [r.kind for r in result.records] == ["received"]


def test_restart_needing_approval_waits_for_it() -> None:
    result = step(make({"phase": "Assessing"}), assessed())
    assert isinstance(result, Transition) and result.phase == "AwaitingApproval"
    approval = result.status["approval"]
    assert approval["required"] is True and approval["state"] == "Pending"
    assert approval["deadline"] == (NOW + timedelta(seconds=1800)).isoformat().replace(
        "+00:00", "Z"
    )
    assert result.status["assessment"]["action"] == "restart_service"
    assert result.wake_after == 1800
    assert conditions(result)["Assessed"] == ("True", "Safe")


def test_restart_without_approval_records_the_intent_first() -> None:
    no_approval = policy(approval={"requiredFor": []})
    result = step(make({"phase": "Assessing"}), assessed(), policy=no_approval)
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert result.status["remediation"] == {
        "action": "restart_service",
        "parameters": {},
        "target": CHECKOUT,
        "result": "Pending",
    }
    assert result.status["approval"]["action"] == "restart_service"
    assert result.status["approval"]["target"] == CHECKOUT
    # The intent is written before any action: nothing is to be gathered yet.
    assert result.status["remediation"]["result"] == "Pending"


@pytest.mark.parametrize(
    ("action", "decision", "phase", "kind"),
    [
        ("notify_team", "SAFE", "Escalated", "escalated"),
        ("restart_service", "ESCALATE", "Escalated", "escalated"),
        ("ignore", "SAFE", "Ignored", "ignored"),
    ],
)
def test_assessment_outcomes(action: str, decision: str, phase: str, kind: str) -> None:
    result = step(make({"phase": "Assessing"}), assessed(action, decision))
    assert isinstance(result, Transition) and result.phase == phase
    assert [r.kind for r in result.records] == ["assessment", kind]


def test_restart_without_any_cluster_escalates() -> None:
    incident = make({"phase": "Assessing"}, service={"name": "checkout"})
    no_default = Defaults(cluster=None)
    no_approval = policy(approval={"requiredFor": []})
    result = step(incident, assessed(), policy=no_approval, defaults=no_default)
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


def test_pending_approval_waits_until_the_deadline() -> None:
    deadline = NOW + timedelta(minutes=10)
    incident = awaiting(state="Pending", deadline=deadline.isoformat())
    assert step(incident) == Wait(600.0)


def test_approval_starts_the_remediation() -> None:
    incident = awaiting(state="Approved", by="U123", via="slack")
    result = step(incident)
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert conditions(result)["Approved"] == ("True", "Approved")
    assert "U123 via slack" in result.records[1].message  # after the implied acknowledgement
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
def test_an_approval_acts_only_on_what_it_approved(
    approved: dict[str, Any], service: dict[str, Any] | None
) -> None:
    incident = awaiting(service, state="Approved", by="U123", via="kubectl", **approved)
    result = step(incident)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "ApprovalMismatch"
    assert "remediation" not in result.status  # no intent: nothing will be executed


def test_an_approved_action_the_policy_no_longer_allows_is_not_started() -> None:
    incident = awaiting(state="Approved", by="U123", via="slack")
    now_forbidden = policy(allowedActions=["notify_team", "ignore"])
    result = step(incident, policy=now_forbidden)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "ActionNotAllowed"
    assert "remediation" not in result.status


def test_rejection_escalates_without_acting() -> None:
    incident = awaiting(state="Rejected", by="U9", via="slack")
    result = step(incident)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert conditions(result)["Approved"] == ("False", "Rejected")
    assert "remediation" not in result.status


@pytest.mark.parametrize(
    ("on_timeout", "phase"),
    [("escalate", "Escalated"), ("approve", "Remediating"), ("ignore", "Ignored")],
)
def test_expired_approval_follows_the_policy(on_timeout: str, phase: str) -> None:
    deadline = NOW - timedelta(seconds=1)
    incident = awaiting(state="Pending", deadline=deadline.isoformat())
    result = step(incident, policy=policy(approval={"onTimeout": on_timeout}))
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


def test_an_executed_restart_records_its_deployment() -> None:
    result = step(remediating(), Facts(executed=RECEIPT))
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert result.status["remediation"]["result"] == "InProgress"
    assert result.status["remediation"]["receipt"] == "ecs-svc/123"
    assert [r.kind for r in result.records] == ["action_started"]
    assert result.wake_after


@pytest.mark.parametrize(
    ("rollout", "phase", "result_"),
    [("Succeeded", "Resolved", "Succeeded"), ("Failed", "Escalated", "Failed")],
)
def test_rollout_outcome(rollout: Progress, phase: str, result_: str) -> None:
    incident = remediating("InProgress", receipt="d-1", startedAt=NOW.isoformat())
    result = step(incident, Facts(progress=rollout))
    assert isinstance(result, Transition) and result.phase == phase
    assert result.status["remediation"]["result"] == result_


def test_rollout_in_progress_waits_then_times_out() -> None:
    incident = remediating("InProgress", receipt="d-1", startedAt=NOW.isoformat())
    going = Facts(progress="InProgress")
    assert isinstance(step(incident, going), Wait)
    late = NOW + timedelta(seconds=601)
    result = step(incident, going, now=late)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.status["remediation"]["result"] == "TimedOut"


def test_refused_restart_escalates_with_the_reason() -> None:
    refused = ActionRefused("Cooldown", "checkout restarted 3 minutes ago")
    result = step(remediating(), Facts(executed=refused))
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.status["remediation"]["result"] == "Refused"
    assert conditions(result)["Remediated"] == ("False", "Cooldown")


def test_unknown_restart_outcome_is_asked_again_not_escalated() -> None:
    unknown = Facts(executed=OutcomeUnknown("UpdateService timed out"))
    incident = remediating()
    incident.status.conditions = []
    assert step(incident, unknown) == Wait(10.0)
    late = NOW + timedelta(seconds=601)
    intent = Condition(
        type="Remediated", status="Unknown", reason="Pending", last_transition_time=NOW
    )
    incident.status.conditions = [intent]
    result = step(incident, unknown, now=late)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert conditions(result)["Remediated"] == ("False", "OutcomeUnknown")


def test_failed_restart_escalates() -> None:
    failed = Facts(executed=RemediationFailed("ServiceNotFoundException"))
    result = step(remediating(), failed)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.status["remediation"]["result"] == "Failed"


@pytest.mark.parametrize("phase", ["Triggered", "Assessing", "AwaitingApproval", "Escalated"])
def test_recovery_resolves_an_open_incident(phase: str) -> None:
    incident = make({"phase": phase, "alarmState": "OK"})
    assert wants(incident, defaults=DEFAULTS) is None  # nobody to ask, nothing to do
    result = step(incident)
    assert isinstance(result, Transition) and result.phase == "Resolved"
    assert conditions(result)["Resolved"] == ("True", "AlarmRecovered")


def test_a_remediation_whose_target_changed_is_not_carried_out() -> None:
    incident = remediating()
    assert incident.status.remediation is not None
    incident.status.remediation.target = "eu-west-1/prod/payments"
    assert wants(incident, defaults=DEFAULTS) is None  # nothing is executed
    result = step(incident)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "TargetChanged"


def test_recovery_cancels_a_pending_approval() -> None:
    deadline = NOW + timedelta(minutes=10)
    incident = awaiting(state="Pending", deadline=deadline.isoformat())
    incident.status.alarm_state = "OK"
    result = step(incident)
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
def test_every_alias_of_a_service_is_one_target(service: dict[str, Any]) -> None:
    no_approval = policy(approval={"requiredFor": []})
    result = step(make({"phase": "Assessing"}, service=service), assessed(), policy=no_approval)
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
        ({"name": "AWS/RDS", "platform": "none"}, "names no service"),
    ],
)
def test_a_target_that_does_not_resolve_is_never_acted_on(
    service: dict[str, Any], why: str
) -> None:
    no_approval = policy(approval={"requiredFor": []})
    result = step(make({"phase": "Assessing"}, service=service), assessed(), policy=no_approval)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == "NoTarget"
    assert why in result.records[-1].message
    assert "remediation" not in result.status and "approval" not in result.status


def test_recovery_during_a_restart_lets_it_finish() -> None:
    incident = remediating()
    incident.status.alarm_state = "OK"
    target = Target(region="eu-west-1", cluster="prod", service="checkout")
    assert wants(incident, defaults=DEFAULTS) == Execute(target, "restart_service", {})
    result = step(incident, Facts(executed=RECEIPT))
    assert isinstance(result, Transition) and result.phase == "Remediating"


@pytest.mark.parametrize("phase", ["Resolved", "Failed", "Escalated", "Ignored"])
def test_finished_incidents_are_left_alone(phase: str) -> None:
    incident = make({"phase": phase})
    assert wants(incident, defaults=DEFAULTS) is None
    assert step(incident) is None


def test_nothing_gathered_means_nothing_decided() -> None:
    # A decision that needs a fact never guesses it.
    assert step(make({"phase": "Assessing"})) is None
    assert step(remediating()) is None
    assert step(remediating("InProgress", receipt="d-1")) is None


# --- the other two steps of a pass: wants() and gather() ----------------------


def test_each_phase_wants_what_its_decision_needs() -> None:
    target = Target(region="eu-west-1", cluster="prod", service="checkout")
    assert wants(make({"phase": "Triggered"}), defaults=DEFAULTS) is None
    assert wants(make({"phase": "Assessing"}), defaults=DEFAULTS) == AssessIt()
    assert wants(awaiting(state="Approved"), defaults=DEFAULTS) is None
    assert wants(remediating(), defaults=DEFAULTS) == Execute(target, "restart_service", {})
    in_progress = remediating("InProgress", receipt="d-1")
    assert wants(in_progress, defaults=DEFAULTS) == Verify(target, "restart_service", {}, "d-1")


class Recorder:
    """Our Remediator interface, recording what it is asked to do."""

    def __init__(self, *, fail: RemediationFailed | ActionRefused | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail

    async def execute(self, call: ActionCall, *, limits: RemediationPolicy) -> Receipt:
        self.calls.append((call.action, (call.incident_id, call.target, call.parameters)))
        if self.fail:
            raise self.fail
        return RECEIPT

    async def verify(self, call: ActionCall, *, receipt: str) -> Progress:
        self.calls.append(("verify", (call.action, call.target, receipt)))
        if self.fail:
            raise self.fail
        return "Succeeded"


def ports(remediator: Recorder, answer: Facts | None = None) -> Ports:
    async def assess(incident: Incident, policy: Policy) -> Assessment:
        assert answer is not None and answer.assessment is not None
        return answer.assessment

    return Ports(assess=assess, remediator=remediator)


async def test_gather_carries_the_intent_out_and_hands_failures_back_as_facts() -> None:
    target = Target(region="eu-west-1", cluster="prod", service="checkout")
    incident, pol = remediating(), DEFAULT
    done = Recorder()
    facts = await gather(
        Execute(target, "restart_service", {}), incident=incident, policy=pol, ports=ports(done)
    )
    assert facts == Facts(executed=RECEIPT)
    assert done.calls == [("restart_service", ("prod/checkout-abc@u-1", target, {}))]

    refused = ActionRefused("Cooldown", "restarted 3 minutes ago")
    facts = await gather(
        Execute(target, "restart_service", {}),
        incident=incident,
        policy=pol,
        ports=ports(Recorder(fail=refused)),
    )
    assert facts.executed is refused

    looked = await gather(
        Verify(target, "restart_service", {}, "d-1"),
        incident=incident,
        policy=pol,
        ports=ports(done),
    )
    assert looked == Facts(progress="Succeeded")
    assert await gather(None, incident=incident, policy=pol, ports=ports(done)) == Facts()


async def test_a_pass_assesses_then_decides() -> None:
    answer = assessed("ignore")
    result = await advance(
        make({"phase": "Assessing"}), policy=DEFAULT, ports=ports(Recorder(), answer), now=NOW
    )
    assert isinstance(result, Transition) and result.phase == "Ignored"


# --- Kubernetes targets ---------------------------------------------------------

WEB = {"name": "web", "namespace": "shop", "platform": "kubernetes"}
RESTART_WEB = policy(
    allowedActions=["restart_deployment", "restart_service", "notify_team"],
    actions={"restart_deployment": {"namespaces": ["shop"]}},
    approval={"requiredFor": []},
)


def test_a_kubernetes_action_on_its_deployment_records_the_intent() -> None:
    incident = make({"phase": "Assessing"}, service=WEB)
    result = step(incident, assessed("restart_deployment"), policy=RESTART_WEB)
    assert isinstance(result, Transition) and result.phase == "Remediating"
    assert result.status["remediation"]["target"] == "kubernetes/shop/web"
    target = Workload(namespace="shop", name="web")
    remediating_web = make(
        {"phase": "Remediating", "remediation": result.status["remediation"]}, service=WEB
    )
    assert wants(remediating_web, defaults=DEFAULTS) == Execute(target, "restart_deployment", {})


@pytest.mark.parametrize(
    ("action", "service", "reason", "says"),
    [
        # An ECS action for an alarm about a Deployment, and the other way round.
        ("restart_service", WEB, "NoTarget", "restart_service does not act on kubernetes/shop/web"),
        ("restart_deployment", None, "NoTarget", "does not act on eu-west-1/prod/checkout"),
        # A namespace the policy does not list: refused before anyone is asked.
        (
            "restart_deployment",
            {**WEB, "namespace": "payments"},
            "OutOfBounds",
            "namespace payments is not one the policy allows",
        ),
        # Not a name the API server would take.
        ("restart_deployment", {**WEB, "name": "Web_1"}, "NoTarget", "not a Kubernetes"),
        ("restart_deployment", {**WEB, "namespace": None}, "NoTarget", "no valid namespace"),
    ],
)
def test_an_action_is_only_ever_aimed_at_its_kind_of_target(
    action: str, service: dict[str, Any] | None, reason: str, says: str
) -> None:
    incident = make({"phase": "Assessing"}, **({"service": service} if service else {}))
    result = step(incident, assessed(action), policy=RESTART_WEB)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.records[-1].reason == reason
    assert says in result.records[-1].message
    assert "remediation" not in result.status and "approval" not in result.status


# --- acknowledgement ----------------------------------------------------------------

ACK = {"by": "U0ALICE", "via": "slack", "at": NOW.isoformat()}


def test_an_acknowledgement_is_recorded_once_even_when_nothing_else_happens() -> None:
    escalated = make({"phase": "Escalated", "acknowledgement": ACK})
    result = step(escalated)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert conditions(result)["Acknowledged"] == ("True", "Acknowledged")
    assert [(r.kind, r.message) for r in result.records] == [
        ("acknowledged", "acknowledged by U0ALICE via slack")
    ]
    recorded = make(
        {
            "phase": "Escalated",
            "acknowledgement": ACK,
            "conditions": [c.to_api() for c in result.conditions],
        }
    )
    assert step(recorded) is None  # once


def test_an_acknowledgement_rides_along_with_the_pass_and_keeps_its_wait() -> None:
    assessing = make({"phase": "Assessing", "acknowledgement": ACK})
    result = step(assessing, assessed("notify_team", "ESCALATE"))
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert [r.kind for r in result.records] == ["acknowledged", "assessment", "escalated"]
    pending = awaiting(state="Pending", deadline=(NOW + timedelta(minutes=5)).isoformat())
    pending.status.acknowledgement = Acknowledgement.model_validate(ACK)
    waiting = step(pending)
    assert isinstance(waiting, Transition) and waiting.phase == "AwaitingApproval"
    assert waiting.wake_after == 300.0


def test_a_persons_approval_is_an_acknowledgement_and_a_closed_incident_takes_none() -> None:
    approved = awaiting(state="Approved", by="U123", via="slack")
    result = step(approved)
    assert isinstance(result, Transition)
    assert result.status["acknowledgement"]["by"] == "U123"
    assert result.status["acknowledgement"]["via"] == "approval"
    assert conditions(result)["Acknowledged"] == ("True", "Acknowledged")
    # The policy's own approval is nobody's.
    by_policy = step(
        make({"phase": "Assessing"}), assessed(), policy=policy(approval={"requiredFor": []})
    )
    assert isinstance(by_policy, Transition) and "acknowledgement" not in by_policy.status
    assert step(make({"phase": "Resolved", "acknowledgement": ACK})) is None


def alert(fingerprint: str, severity: str) -> AlertEntry:
    seen = NOW.isoformat()
    return AlertEntry.model_validate(
        {"fingerprint": fingerprint, "title": f"{fingerprint} errors", "severity": severity,
         "state": "ALARM", "firstSeen": seen, "lastSeen": seen}
    )  # fmt: skip


def test_a_more_severe_alert_joining_before_the_action_is_assessed_again() -> None:
    waiting = awaiting(state="Pending", deadline=(NOW + timedelta(minutes=10)).isoformat())
    assert waiting.status.assessment is not None
    assessment = waiting.status.assessment.model_copy(update={"severity": "high"})

    def with_alerts(*alerts: AlertEntry) -> Incident:
        status = waiting.status.model_copy(update={"assessment": assessment, "alerts": alerts})
        return waiting.model_copy(update={"status": status})

    storm = with_alerts(alert("api", "high"), alert("db", "critical"))
    assert storm.severity == "critical"
    result = step(storm)
    assert isinstance(result, Transition) and result.phase == "Assessing"
    assert result.status["approval"]["state"] == "Cancelled"
    assert conditions(result)["Approved"] == ("False", "Reassessing")
    assert [r.reason for r in result.records] == ["MoreSevereAlert"]
    assert "'db errors' (critical)" in result.records[0].message
    # No alert more severe than assessed: the approval waits on.
    assert step(with_alerts(alert("api", "high"), alert("web", "medium"))) == Wait(600.0)


CHAIN = policy(
    escalation={
        "steps": [
            {"after": "5m", "slackUserGroup": "S0ONCALL"},
            {"after": "10m", "email": ["lead@example.com"], "pagerduty": "secondary"},
        ]
    }
)


def escalated(taken: int = 0, **status: Any) -> Incident:
    steps = [
        {"number": n + 1, "step": n % 2 + 1, "at": NOW.isoformat(), "slackUserGroup": "S0ONCALL"}
        for n in range(taken)
    ]
    return make({"phase": "Escalated", "escalation": {"since": NOW.isoformat(), "steps": steps},
                 **status})  # fmt: skip


def test_escalating_starts_the_chain_clock() -> None:
    result = step(make({"phase": "Assessing"}), assessed("notify_team", "ESCALATE"), policy=CHAIN)
    assert isinstance(result, Transition) and result.phase == "Escalated"
    assert result.status["escalation"] == {"since": NOW.isoformat().replace("+00:00", "Z"),
                                           "steps": []}  # fmt: skip


def test_an_unacknowledged_escalation_takes_each_step_when_due() -> None:
    assert step(escalated(), policy=CHAIN, now=NOW + timedelta(minutes=1)) == Wait(240.0)
    first = step(escalated(), policy=CHAIN, now=NOW + timedelta(minutes=5))
    assert isinstance(first, Transition) and first.phase == "Escalated"
    [taken] = first.status["escalation"]["steps"]
    assert (taken["number"], taken["step"], taken["slackUserGroup"]) == (1, 1, "S0ONCALL")
    [record] = first.records
    assert (record.kind, record.reason) == ("escalation", "EscalationStep1")
    assert "step 1 of 2: Slack user group S0ONCALL" in record.message
    assert first.wake_after == 600.0  # the second step, ten minutes after the first
    # The second step counts from the first: due at 15 minutes.
    assert step(escalated(1), policy=CHAIN, now=NOW + timedelta(minutes=14)) == Wait(60.0)
    second = step(escalated(1), policy=CHAIN, now=NOW + timedelta(minutes=15))
    assert isinstance(second, Transition)
    taken = second.status["escalation"]["steps"][-1]
    assert (taken["number"], taken["step"], taken["email"], taken["pagerduty"]) == (
        2, 2, ["lead@example.com"], "secondary"
    )  # fmt: skip
    assert second.wake_after is None  # the chain is done
    assert step(escalated(2), policy=CHAIN, now=NOW + timedelta(days=1)) is None


def test_a_repeated_chain_starts_over_after_its_last_step() -> None:
    again = policy(escalation={**CHAIN.spec.escalation.to_api(), "repeat": 1})  # type: ignore[union-attr]
    assert step(escalated(2), policy=again, now=NOW + timedelta(minutes=19)) == Wait(60.0)
    third = step(escalated(2), policy=again, now=NOW + timedelta(minutes=20))
    assert isinstance(third, Transition)
    taken = third.status["escalation"]["steps"][-1]
    assert (taken["number"], taken["step"]) == (3, 1)
    assert third.records[0].reason == "EscalationStep3"
    assert step(escalated(4), policy=again, now=NOW + timedelta(days=1)) is None


def test_an_acknowledgement_or_the_recovery_stops_the_chain() -> None:
    ack = {"by": "U0ALICE", "at": NOW.isoformat(), "via": "slack"}
    acked = step(escalated(acknowledgement=ack), policy=CHAIN, now=NOW + timedelta(hours=1))
    # Only the acknowledgement itself is recorded; no step.
    assert isinstance(acked, Transition)
    assert [r.reason for r in acked.records] == ["Acknowledged"]
    recovered = step(escalated(alarmState="OK"), policy=CHAIN, now=NOW + timedelta(hours=1))
    assert isinstance(recovered, Transition) and recovered.phase == "Resolved"
    assert "escalation" not in recovered.status
    # Without a chain an escalated Incident waits for people, as before.
    assert step(escalated(), now=NOW + timedelta(hours=1)) is None
