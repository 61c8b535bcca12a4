"""The operator's /metrics after real traffic: every metric it defines has a
sample that is not zero.

Traffic: a CPU alarm Gemini answers with a restart (tokens counted), which is
restarted, resolved and, its retention being short, deleted; an alarm whose
assessment fails at Gemini (a 400) and escalates, told in Slack.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from aws_fixtures import Aws
from fakes.gemini import FakeGemini
from fakes.slack import FakeSlack
from incident_operator import metrics
from incident_operator.models import GROUP, VERSION
from operator_support import OperatorProcess, create_policy, get_incident, operator_env, wait_for
from test_operator import raise_alarm, wait_phase
from test_silences import create_silence
from webhook_support import new_token

pytestmark = pytest.mark.usefixtures("crds_installed")

CHANNEL = "C0METRICS"
RESTART = {
    "decision": "SAFE",
    "action": "restart_service",
    "message": "CPU saturation; a restart clears it",
    "confidence": 0.9,
    "rationale": "the alarm is a CPU alarm",
}


@pytest.fixture
def operator(
    kubeconfig: Path,
    namespace: str,
    aws: Aws,
    api: client.ApiClient,
    gemini: FakeGemini,
    slack: FakeSlack,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    create_policy(api, namespace, "gemini-decides",
                  {"assessor": {"type": "gemini"}, "approval": {"requiredFor": []},
                   "notify": {"slack": {"channel": CHANNEL}},
                   "retention": {"seconds": 1}})  # fmt: skip
    env = operator_env(
        kubeconfig, aws, GEMINI_API_KEY=new_token(), GEMINI_BASE_URL=gemini.base_url,
        SLACK_BOT_TOKEN=slack.token, SLACK_API_URL=slack.api_url,
    )  # fmt: skip
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        yield process
    finally:
        process.stop()


def samples(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name -> its samples (name, labels, value)."""
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


async def test_every_operator_metric_has_a_sample_after_real_traffic(
    api: client.ApiClient,
    namespace: str,
    aws: Aws,
    gemini: FakeGemini,
    slack: FakeSlack,
    operator: OperatorProcess,
) -> None:
    # Gemini takes 2 s over the first answer: long enough to see it queued.
    gemini.answer(RESTART, delay=2, prompt_tokens=321, output_tokens=45)
    gemini.fail(400, "Request contains an invalid argument.")
    restarted = await raise_alarm(api, namespace, alarm="checkout-cpu-sev2")
    depths: list[float] = []

    def queued() -> bool:
        [(_, _, depth)] = samples(operator.metrics())["incident_operator_reconcile_queue_depth"]
        depths.append(depth)
        return depth >= 1

    wait_for("an Incident in the reconcile queue", queued, timeout=30)
    wait_phase(api, namespace, restarted, "Resolved")
    escalated = await raise_alarm(api, namespace, service="payments", alarm="payments-5xx")
    incident = wait_phase(api, namespace, escalated, "Escalated")
    assert "gemini call failed" in incident["status"]["assessment"]["rationale"]
    # Somebody takes the escalated one: MTTA.
    ack = {"by": "alice", "via": "kubectl", "at": datetime.now(UTC).isoformat()}
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "incidents", escalated, {"status": {"acknowledgement": ack}}
    )

    def acknowledged() -> bool:
        conditions = get_incident(api, namespace, escalated)["status"].get("conditions", [])
        return any(c["type"] == "Acknowledged" for c in conditions)

    wait_for(f"{escalated}'s acknowledgement to be recorded", acknowledged, timeout=15)
    # A deployment of search is silenced: its alarm is muted.
    until = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    search = {"matchers": [{"name": "service", "value": "search"}], "endsAt": until}
    create_silence(api, namespace, "search-deploy", search)
    muted = await raise_alarm(api, namespace, service="search", alarm="search-latency")
    wait_phase(api, namespace, muted, "Silenced")

    def deleted() -> bool:
        try:
            get_incident(api, namespace, restarted)
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_for(f"{restarted} to be deleted after its retention", deleted, timeout=15)
    scraped = samples(operator.metrics())

    # The queue is empty at rest; its depth while Gemini was thinking counts.
    depth = "incident_operator_reconcile_queue_depth"
    scraped[depth] = [(depth, {}, max(depths))]
    defined = metrics.families()
    assert set(defined) <= set(scraped), "not exported at all"
    zero = [name for name in defined if not any(value > 0 for _, _, value in scraped[name])]
    assert zero == [], f"no sample above zero: {zero}"

    # And the samples say what happened.
    def value(family: str, sample: str, **labels: str) -> float:
        return sum(v for n, found, v in scraped[family] if n == sample
                   and all(found.get(k) == want for k, want in labels.items()))  # fmt: skip

    assert value("incident_operator_leader", "incident_operator_leader") == 1
    assert value("incident_operator_alarms_silenced", "incident_operator_alarms_silenced_total",
                 service="search") == 1  # fmt: skip
    model = "gemini-2.5-flash"
    ai_tokens = "incident_operator_ai_tokens_total"
    assert value("incident_operator_ai_tokens", ai_tokens, model=model, kind="prompt") == 321
    assert value("incident_operator_ai_tokens", ai_tokens, kind="output") == 45
    assert value("incident_operator_ai_failures", "incident_operator_ai_failures_total",
                 reason="client_error") == 1  # fmt: skip
    assert value("incident_operator_remediation_outcomes",
                 "incident_operator_remediation_outcomes_total",
                 action="restart_service", outcome="Succeeded") == 1  # fmt: skip
    assert value("incident_operator_assessments", "incident_operator_assessments_total",
                 assessor="gemini", decision="ESCALATE") == 1  # fmt: skip
    assert value("incident_operator_notifications", "incident_operator_notifications_total",
                 channel="slack", outcome="told") >= 2  # fmt: skip
    assert (
        value(
            "incident_operator_notify_breaker_state",
            "incident_operator_notify_breaker_state",
            channel="slack",
            state="closed",
        )
        == 1
    )
    resolution = "incident_operator_alarm_to_resolution_seconds"
    assert value(resolution, f"{resolution}_count", service="checkout", severity="high") == 1
    assert value("incident_operator_incidents", "incident_operator_incidents",
                 phase="Escalated", service="payments") == 1  # fmt: skip
    assert value("incident_operator_retention_deleted",
                 "incident_operator_retention_deleted_total") == 1  # fmt: skip
    # The one restart's UpdateService, and the timeline's puts, waited on AWS.
    aws_seconds = "incident_operator_aws_call_seconds"
    assert value(aws_seconds, f"{aws_seconds}_count", service="ecs", operation="UpdateService") == 1
    assert value(aws_seconds, f"{aws_seconds}_count", service="dynamodb", operation="PutItem") > 0
