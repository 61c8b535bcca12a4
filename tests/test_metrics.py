"""What a written transition counts, and what the census and breakers report
(no servers: the metrics module on Incident objects)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from incident_operator import metrics
from incident_operator.models import Incident
from incident_operator.notify.breaker import CircuitBreaker
from incident_operator.notify.log import LogNotifier
from incident_operator.policy import DEFAULT

AT = "2026-11-30T10:00:00Z"
ARN = "arn:aws:ecs:us-east-1:123456789012:service/demo/checkout"


def incident(phase: str | None, *, at: str = "2026-11-30T10:00:30Z", **status: Any) -> Incident:
    kinds = status.pop("records", [])
    return Incident.model_validate(
        {
            "metadata": {"name": "checkout-1", "namespace": "ops", "uid": "u1",
                         "creationTimestamp": AT},
            "spec": {"source": "generic", "fingerprint": "f", "title": "t", "severity": "high",
                     "service": {"name": "checkout", "cluster": "demo"},
                     "alarm": {"name": "checkout-cpu"}},
            "status": {
                **({"phase": phase} if phase else {}),
                "firstSeen": AT,
                "lastTransition": {
                    "at": at, "phase": phase or "Triggered",
                    "records": [{"kind": k, "reason": r, "message": "m"} for k, r in kinds],
                },
                **status,
            },
        }
    )  # fmt: skip


def counted(name: str, **labels: str) -> Callable[[], float]:
    return lambda: metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def delta(read: Callable[[], float], act: Callable[[], None]) -> float:
    before = read()
    act()
    return read() - before


APPROVED_BY_ALICE = {"required": True, "state": "Approved", "by": "alice", "via": "kubectl"}
PENDING = {"action": "restart_service", "target": "us-east-1/demo/checkout", "result": "Pending"}


def test_a_persons_approval_counts_although_status_said_so_before_the_pass() -> None:
    before = incident("AwaitingApproval", approval=APPROVED_BY_ALICE)
    after = incident("Remediating", approval=APPROVED_BY_ALICE, remediation=PENDING,
                     records=[("approval", "Approved")])  # fmt: skip
    approvals = counted("incident_operator_alarm_to_approval_seconds_count",
                        service="checkout", severity="high")  # fmt: skip
    seconds = counted("incident_operator_alarm_to_approval_seconds_sum",
                      service="checkout", severity="high")  # fmt: skip
    assert delta(approvals, lambda: metrics.transition_written(before, after)) == 1
    assert delta(seconds, lambda: metrics.transition_written(before, after)) == 30


def test_the_policys_approval_counts_with_the_assessment() -> None:
    assessment = {"decision": "SAFE", "action": "restart_service", "message": "m",
                  "confidence": 0.9, "rationale": "r", "assessor": "rules"}  # fmt: skip
    before = incident("Assessing")
    after = incident("Remediating", assessment=assessment, remediation=PENDING,
                     approval={"required": False, "state": "Approved", "via": "policy"},
                     records=[("assessment", "Assessed")])  # fmt: skip
    approvals = counted("incident_operator_alarm_to_approval_seconds_count",
                        service="checkout", severity="high")  # fmt: skip
    assessed = counted("incident_operator_assessments_total", assessor="rules", decision="SAFE")
    transitions = counted("incident_operator_transitions_total", service="checkout",
                          from_phase="Assessing", to_phase="Remediating")  # fmt: skip
    for read in (approvals, assessed, transitions):
        assert delta(read, lambda: metrics.transition_written(before, after)) == 1


def test_a_restart_whose_outcome_is_unknown_is_an_attempt_with_an_unknown_outcome() -> None:
    before = incident("Remediating", remediation=PENDING)
    after = incident("Escalated", remediation=PENDING, records=[("escalated", "OutcomeUnknown")])
    attempts = counted("incident_operator_remediation_attempts_total", action="restart_service")
    unknown = counted("incident_operator_remediation_outcomes_total",
                      action="restart_service", outcome="Unknown")  # fmt: skip
    for read in (attempts, unknown):
        assert delta(read, lambda: metrics.transition_written(before, after)) == 1


def test_a_rollout_followed_is_neither_a_new_attempt_nor_an_outcome() -> None:
    started = {**PENDING, "result": "InProgress", "receipt": "d1"}
    before = incident("Remediating", remediation=started)
    after = incident("Remediating", remediation=started)
    attempts = counted("incident_operator_remediation_attempts_total", action="restart_service")
    assert delta(attempts, lambda: metrics.transition_written(before, after)) == 0


def test_the_census_counts_by_phase_and_finds_the_oldest_of_each() -> None:
    census = metrics.Census(clock=lambda: 1_780_000_000.0)
    for uid, phase, at in [("a", "Escalated", "2026-05-28T20:26:40Z"),
                           ("b", "Escalated", "2026-05-28T20:00:00Z"),
                           ("c", "Remediating", "2026-05-28T20:26:30Z")]:  # fmt: skip
        census.observe(
            {"metadata": {"uid": uid, "creationTimestamp": at},
             "spec": {"service": {"name": ARN},
                      "severity": "high", "alarm": {"name": "cpu"}},
             "status": {"phase": phase, "occurrences": 2, "lastTransition": {"at": at}}}
        )  # fmt: skip
    census.forget("nobody")
    found = {f.name: {tuple(s.labels.values()): s.value for s in f.samples}
             for f in census.collect()}  # fmt: skip
    # The service by its plain name, as policies match it.
    assert found["incident_operator_incidents"] == {
        ("Escalated", "checkout", "high"): 2, ("Remediating", "checkout", "high"): 1
    }  # fmt: skip
    assert found["incident_operator_alarm_occurrences"] == {("checkout", "cpu"): 6}
    assert found["incident_operator_phase_age_max_seconds"] == {
        ("Escalated",): 1600.0, ("Remediating",): 10.0
    }  # fmt: skip


def test_each_breaker_reports_its_state() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=1, cooloff=60, clock=lambda: now[0])
    metrics.watch_breakers({"slack": breaker})
    state = {s: counted("incident_operator_notify_breaker_state", channel="slack", state=s)
             for s in metrics.BREAKER_STATES}  # fmt: skip
    assert [state[s]() for s in metrics.BREAKER_STATES] == [1, 0, 0]
    breaker.failed("503")
    assert [state[s]() for s in metrics.BREAKER_STATES] == [0, 1, 0]
    now[0] = 61
    assert [state[s]() for s in metrics.BREAKER_STATES] == [0, 0, 1]
    breaker.succeeded()
    assert [state[s]() for s in metrics.BREAKER_STATES] == [1, 0, 0]


async def test_with_no_channel_the_log_counts_as_one() -> None:
    told = counted("incident_operator_notifications_total", channel="log", outcome="told")
    before = told()
    await LogNotifier().announce(incident("Escalated"), policy=DEFAULT)
    assert told() == before + 1


def test_mtta_is_measured_to_the_acknowledgement_as_the_person_gave_it() -> None:
    ack = {"by": "alice", "via": "slack", "at": "2026-11-30T10:01:00Z"}
    before = incident("Escalated", acknowledgement=ack)
    # Recorded by a pass 4 minutes later: MTTA is still the minute the person said so.
    after = incident("Escalated", at="2026-11-30T10:05:00Z", acknowledgement=ack,
                     records=[("acknowledged", "Acknowledged")])  # fmt: skip
    acks = counted("incident_operator_alarm_to_acknowledgement_seconds_count",
                   service="checkout", severity="high")  # fmt: skip
    seconds = counted("incident_operator_alarm_to_acknowledgement_seconds_sum",
                      service="checkout", severity="high")  # fmt: skip
    assert delta(acks, lambda: metrics.transition_written(before, after)) == 1
    assert delta(seconds, lambda: metrics.transition_written(before, after)) == 60
