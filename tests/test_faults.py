"""The fault matrix: Gemini, Slack, Jira, SES, DynamoDB and ECS fail while
Incidents are in flight.

Each case runs a real operator process against the real API server, with
every AWS call going through `AwsFaults` (a proxy to moto that throttles,
fails, loses answers or answers late) and the fakes of Gemini, Slack and
Jira scripted to fail the same ways. Four Incidents at once: two CPU alarms
the policy answers with a restart, two latency warnings it escalates (Slack,
a Jira issue and an email each). Whatever fails, afterwards:

- every Incident is in the terminal phase it would have reached anyway;
- no side effect happened twice: one ECS restart per restarted Incident
  (counted by moto), at most one Slack message and one Jira issue per
  Incident, one email per escalated Incident (counted by moto's SES);
- the timeline lost nothing: its entries are exactly the Incident's Events,
  each once, in the order of its phases.

"Lost" and "slow" faults are the hard ones: the service acted, and the
caller cannot know. They are what makes a blind retry send twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from kubernetes import client

from api_cuts import ApiServerCuts
from aws_fixtures import Aws, AwsFaults
from fakes.gemini import FakeGemini
from fakes.jira import FakeJira
from fakes.slack import FakeSlack
from incident_operator.devstack.controlplane import ControlPlane
from operator_support import (
    OperatorProcess,
    channels_env,
    create_policy,
    events_for,
    get_incident,
    operator_env,
    wait_for,
)
from test_operator import raise_alarm
from webhook_support import new_token

pytestmark = pytest.mark.usefixtures("crds_installed")

CHANNEL = "C0FAULTS"
SENDER = "incidents@example.com"
# service -> (alarm, the phase it ends in when nothing fails)
ALARMS = {
    "cart": ("cart-cpu-sev2", "Resolved"),
    "checkout": ("checkout-cpu-sev2", "Resolved"),
    "search": ("search-latency-warning", "Escalated"),
    "payments": ("payments-latency-warning", "Escalated"),
}
POLICY = {
    "rules": [{"alarmNames": ["*-cpu-*"], "action": "restart_service"}],
    "approval": {"requiredFor": []},
}
SAFE_RESTART = {
    "decision": "SAFE",
    "action": "restart_service",
    "message": "CPU saturation; a restart clears it",
    "confidence": 0.9,
    "rationale": "the alarm is a CPU alarm",
}
AS_PYTHON = TypeDeserializer()
TERMINAL = {"Resolved", "Failed", "Escalated", "Ignored"}
# The kinds of timeline entries, in order, for each way an Incident ends here.
STORIES = {
    "Resolved": ["received", "assessment", "action_started", "action_finished", "resolved"],
    "Escalated": ["received", "assessment", "escalated"],
}


@dataclass
class Rig:
    api: client.ApiClient
    namespace: str
    aws: Aws
    faults: AwsFaults
    slack: FakeSlack
    jira: FakeJira
    gemini: FakeGemini
    operator: OperatorProcess

    def start(self, *, assessor: str = "rules") -> None:
        create_policy(
            self.api, self.namespace, "faults", {**POLICY, "assessor": {"type": assessor}}
        )
        self.operator.start()

    async def raise_alarms(self) -> dict[str, str]:
        """One alarm per service, all in flight together: service -> Incident name."""
        return {
            service: await raise_alarm(self.api, self.namespace, service=service, alarm=alarm)
            for service, (alarm, _) in ALARMS.items()
        }


@pytest.fixture
def rig(
    api: client.ApiClient,
    namespace: str,
    aws: Aws,
    kubeconfig: Path,
    slack: FakeSlack,
    jira_server: FakeJira,
    gemini: FakeGemini,
    tmp_path: Path,
) -> Iterator[Rig]:
    aws.timeline_table()
    for service in ALARMS:
        aws.ecs_service(cluster="demo", service=service, running=2)
    aws.client("ses", record=False).verify_email_identity(EmailAddress=SENDER)
    faults = aws.faults()
    env = operator_env(
        kubeconfig,
        aws,
        AWS_ENDPOINT_URL=faults.url,
        **channels_env(slack, jira_server, channel=CHANNEL, sender=SENDER),
        GEMINI_API_KEY=new_token(),
        GEMINI_BASE_URL=gemini.base_url,
    )
    operator = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path)
    rig = Rig(api, namespace, aws, faults, slack, jira_server, gemini, operator)
    try:
        yield rig
    finally:
        operator.stop()


def settle(rig: Rig, names: dict[str, str], *, timeout: float = 120) -> dict[str, dict[str, Any]]:
    """Wait until every Incident is in a terminal phase; service -> Incident."""

    def phases() -> dict[str, str | None]:
        return {
            service: get_incident(rig.api, rig.namespace, name).get("status", {}).get("phase")
            for service, name in names.items()
        }

    try:
        wait_for("every Incident to end", lambda: set(phases().values()) <= TERMINAL,
                 timeout=timeout)  # fmt: skip
    except AssertionError as error:
        raise AssertionError(f"{error}\n{rig.operator.logs()[-4000:]}") from None
    return {service: get_incident(rig.api, rig.namespace, name) for service, name in names.items()}


def assert_each_once(
    rig: Rig,
    incidents: dict[str, dict[str, Any]],
    *,
    ends: Callable[[str], str] | None = None,
    publish_within: float = 15,
) -> None:
    """The checks every case ends with (see the module's docstring)."""
    expected = {service: (ends or (lambda s: ALARMS[s][1]))(service) for service in ALARMS}
    phases = {service: incident["status"]["phase"] for service, incident in incidents.items()}
    assert phases == expected, {s: i["status"].get("message") for s, i in incidents.items()}
    restarted = [s for s, phase in expected.items() if phase == "Resolved"]
    escalated = [s for s, phase in expected.items() if phase == "Escalated"]

    # One restart per restarted Incident, counted by moto, whoever asked.
    assert rig.aws.server.served_count("UpdateService") == len(restarted)
    # One email per escalation, counted by moto's SES.
    sent = rig.aws.client("ses", record=False).get_send_quota()["SentLast24Hours"]
    assert int(sent) == len(escalated)
    for service, incident in incidents.items():
        uid = incident["metadata"]["uid"]
        # At most one Slack message and one Jira issue per Incident.
        messages = [m for m in rig.slack.top_level(CHANNEL)
                    if (m.metadata or {}).get("event_payload", {}).get("uid") == uid]  # fmt: skip
        assert len(messages) <= 1, f"{service}: {len(messages)} Slack messages"
        for message in messages:
            keys = [m.metadata["event_payload"]["record"]
                    for m in rig.slack.thread(message) if m.metadata]  # fmt: skip
            assert len(keys) == len(set(keys)), f"{service}: a thread reply twice: {keys}"
        issues = [i for i in rig.jira.issues.values()
                  if f"incident-{uid}" in i["fields"]["labels"]]  # fmt: skip
        assert len(issues) <= 1, f"{service}: {len(issues)} Jira issues"
        assert_story(rig, incident, within=publish_within)


def assert_story(rig: Rig, incident: dict[str, Any], *, within: float = 15) -> None:
    """The timeline holds every record the Incident's Events hold, each once."""
    name, phase = incident["metadata"]["name"], incident["status"]["phase"]

    def entries() -> list[dict[str, Any]]:
        items = rig.aws.client("dynamodb", record=False).query(
            TableName="incident-timeline",
            KeyConditionExpression="incident_id = :id",
            ExpressionAttributeValues={":id": {"S": f"{rig.namespace}/{name}"}},
        )["Items"]
        found = [{k: AS_PYTHON.deserialize(v) for k, v in item.items()} for item in items]
        return [e for e in found if e["kind"] != "occurrence"]

    # Published just after the status is written: give it a moment.
    wait_for(f"{name}'s timeline", lambda: [e["kind"] for e in entries()] == STORIES[phase],
             timeout=within)  # fmt: skip
    events = Counter((e.reason, e.message) for e in events_for(rig.api, rig.namespace, name))
    recorded = Counter((e["detail"]["reason"], e["message"]) for e in entries())
    assert recorded == events
    assert max(events.values()) == 1


async def run_aws_case(rig: Rig, case: str) -> dict[str, dict[str, Any]]:
    """Run the four alarms through the faults injected into AWS, and check."""
    rig.start()
    incidents = settle(rig, await rig.raise_alarms())
    assert rig.faults.pending() == 0, "some injected faults never struck"
    assert_each_once(rig, incidents)
    # The faults that struck, for docs/reliability.md (shown with -rA).
    served = {f"{op} {kind}": n for (op, kind), n in sorted(rig.faults.served.items())}
    print(f"{case}: AWS faults served: {served}")
    return incidents


# --- AWS ------------------------------------------------------------------


async def test_ecs_throttled_failing_and_losing_answers(rig: Rig) -> None:
    # Whatever the interleaving, each fault meets a call of its own: the
    # restart is asked again until one call is carried out. A blind retry
    # after "slow" would restart a second time.
    rig.faults.inject("ecs.UpdateService", "throttle", "unavailable", "slow", "lost")
    rig.faults.inject("ecs.DescribeServices", "throttle", "unavailable", "lost", "throttle")
    await run_aws_case(rig, "ecs")


async def test_dynamodb_throttled_failing_and_losing_answers(rig: Rig) -> None:
    # Claims, cooldowns and caps are transactions; timeline entries and
    # email claims are conditional puts.
    rig.faults.inject("dynamodb.TransactWriteItems", "lost", "throttle", "unavailable", "slow")
    rig.faults.inject("dynamodb.PutItem", "lost", "throttle", "unavailable", "lost", "slow")
    rig.faults.inject("dynamodb.GetItem", "throttle", "unavailable")
    await run_aws_case(rig, "dynamodb")


async def test_dynamodb_outage_longer_than_boto3_retries(rig: Rig) -> None:
    # Six throttles in a row outlast boto3's five attempts: the pass fails,
    # the operator retries it later, and nothing is lost or repeated.
    rig.faults.inject("dynamodb.PutItem", *["throttle"] * 6)
    rig.faults.inject("dynamodb.TransactWriteItems", *["unavailable"] * 6)
    await run_aws_case(rig, "dynamodb-outage")


async def test_ses_throttled_failing_and_losing_answers(rig: Rig) -> None:
    # An error answer means not sent: the channel tries again. A lost or
    # late answer may mean a sent email: it is not sent again.
    rig.faults.inject("ses.SendEmail", "throttle", "unavailable", "lost", "slow")
    incidents = await run_aws_case(rig, "ses")
    for service in ("search", "payments"):
        notified = {c["type"]: c for c in incidents[service]["status"]["conditions"]}["Notified"]
        if notified["status"] == "False":
            assert "may have sent it, so it is not sent again" in notified["message"]


# --- Slack, Jira, Gemini ----------------------------------------------------


async def test_a_channel_down_for_a_whole_escalation_is_told_once_it_recovers(
    rig: Rig,
) -> None:
    # Slack refuses every post while the Incident escalates: every attempt
    # of every transition fails, and it ends Escalated, Notified False.
    rig.operator.env["NOTIFY_BREAKER_COOLOFF_SECONDS"] = "2"
    rig.slack.fail("chat.postMessage", "service_unavailable", status=503, times=1000)
    rig.start()
    service, (alarm, _) = "payments", ALARMS["payments"]
    name = await raise_alarm(rig.api, rig.namespace, service=service, alarm=alarm)

    def notified() -> tuple[str, str, str]:
        incident = get_incident(rig.api, rig.namespace, name)
        conditions = {c["type"]: c for c in incident.get("status", {}).get("conditions", [])}
        found = conditions.get("Notified", {})
        phase = incident.get("status", {}).get("phase")
        return phase, found.get("status"), found.get("reason")

    wait_for("the escalation, untold", lambda: notified() == ("Escalated", "False", "SlackFailed"),
             timeout=60)  # fmt: skip
    assert rig.slack.top_level(CHANNEL) == []
    print(f"slack-outage: {rig.slack.count('chat.postMessage')} posts refused")
    rig.slack.recover()
    # Told again after the cool-off, doubling: the message, once, and the
    # escalation's records in its thread.
    wait_for("the escalation, told", lambda: notified() == ("Escalated", "True", "Notified"),
             timeout=60)  # fmt: skip
    [message] = rig.slack.top_level(CHANNEL)
    assert "Escalated" in message.text
    keys = [m.metadata["event_payload"]["record"] for m in rig.slack.thread(message) if m.metadata]
    assert keys and len(keys) == len(set(keys))
    # The channels that had been told were not told twice.
    assert len(rig.jira.issues) == 1
    assert rig.aws.client("ses", record=False).get_send_quota()["SentLast24Hours"] == 1
    incident = get_incident(rig.api, rig.namespace, name)
    assert incident["status"]["notifications"]["slack"]["ts"] == message.ts
    assert_story(rig, incident)


async def test_slack_rate_limited_failing_and_losing_answers(rig: Rig) -> None:
    rig.slack.rate_limit("chat.postMessage", retry_after=1, times=2)
    rig.slack.fail("chat.postMessage", "internal_error", times=1)
    rig.slack.lose("chat.postMessage", times=2)
    rig.slack.slow("chat.postMessage", 7, times=1)  # the client gives up after 5 s
    rig.slack.fail("conversations.history", "service_unavailable", status=503, times=1)
    rig.start()
    incidents = settle(rig, await rig.raise_alarms())
    assert rig.slack.pending() == 0, "some scripted faults never struck"
    assert_each_once(rig, incidents)
    # Every Incident got its message in the end: the faults passed.
    assert len(rig.slack.top_level(CHANNEL)) == len(ALARMS)


async def test_jira_failing_and_losing_answers(rig: Rig) -> None:
    rig.jira.fail(503, times=2)
    rig.jira.lose("create", times=1)
    rig.jira.slow("create", 7, times=1)  # the client gives up after 5 s
    rig.start()
    incidents = settle(rig, await rig.raise_alarms())
    assert rig.jira.pending() == 0, "some scripted faults never struck"
    assert_each_once(rig, incidents)
    escalated = [i for i in incidents.values() if i["status"]["phase"] == "Escalated"]
    assert len(rig.jira.issues) == len(escalated), "an escalation got no issue"


async def test_gemini_throttled_and_failing_then_answering(rig: Rig) -> None:
    # The SDK retries 429 and 5xx; after that Gemini answers, and with its
    # answer (a restart) for every alarm, all four are restarted.
    rig.gemini.fail(429, "Resource has been exhausted", times=2)
    rig.gemini.fail(503, times=1)
    rig.gemini.answer(SAFE_RESTART, times=len(ALARMS))
    rig.start(assessor="gemini")
    incidents = settle(rig, await rig.raise_alarms())
    assert rig.gemini.pending() == 0, "some scripted replies were never asked for"
    assert_each_once(rig, incidents, ends=lambda _: "Resolved")
    assert all(i["status"]["assessment"]["assessor"] == "gemini" for i in incidents.values())


async def test_gemini_timing_out(rig: Rig) -> None:
    # Each attempt may take 2 s; the first two answers come after 4 s. The
    # SDK asks again after a timeout, as after a 503: all four Incidents are
    # restarted on Gemini's answer, two of them on a second request.
    rig.operator.env["GEMINI_TIMEOUT_SECONDS"] = "2"
    rig.gemini.answer(SAFE_RESTART, delay=4, times=2)
    rig.gemini.answer(SAFE_RESTART, times=len(ALARMS))
    rig.start(assessor="gemini")
    incidents = settle(rig, await rig.raise_alarms())
    assert rig.gemini.pending() == 0 and len(rig.gemini.requests) == len(ALARMS) + 2
    assert_each_once(rig, incidents, ends=lambda _: "Resolved")
    assert all(i["status"]["assessment"]["assessor"] == "gemini" for i in incidents.values())


# --- Kubernetes ----------------------------------------------------------------


async def test_api_server_cut_off_whenever_an_incident_moves(
    rig: Rig, control_plane: ControlPlane, tmp_path: Path
) -> None:
    # The operator reaches the API server through a relay. Whenever an
    # Incident has moved since the last cut (8 times at most: each outage
    # lengthens the backoff of the passes it fails), the relay cuts every
    # connection, whatever is in flight on it, and refuses new ones for 1 s:
    # status patches and Events whose answers are lost, watches that break,
    # passes and their retries' reads that fail.
    cuts = ApiServerCuts(control_plane.url)
    original = Path(rig.operator.env["KUBECONFIG"])
    rig.operator.env["KUBECONFIG"] = str(cuts.kubeconfig(original, tmp_path / "kubeconfig"))
    try:
        rig.start()
        names = await rig.raise_alarms()
        seen: set[tuple[str, str | None]] = set()

        def cut_whenever_one_moved() -> bool:
            phases = {
                name: get_incident(rig.api, rig.namespace, name).get("status", {}).get("phase")
                for name in names.values()
            }
            if set(phases.items()) - seen and not cuts.is_down() and cuts.cuts < 8:
                seen.update(phases.items())
                cuts.cut(1)
            return set(phases.values()) <= TERMINAL

        try:
            wait_for("every Incident to end", cut_whenever_one_moved, timeout=120)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{rig.operator.logs()[-6000:]}") from None
        incidents = settle(rig, names)
        print(f"api-cuts: {cuts.cuts} cuts, {cuts.severed} connections severed, "
              f"{cuts.refused} refused")  # fmt: skip
        assert cuts.cuts >= 3 and cuts.severed >= cuts.cuts and cuts.refused > 0
        # The relay stays up: Events and timeline entries of the last
        # transitions may wait for a retry, after a backoff of up to 60 s.
        assert_each_once(rig, incidents, publish_within=90)
    finally:
        cuts.close()


async def test_gemini_down_escalates_everything_and_acts_on_nothing(rig: Rig) -> None:
    rig.gemini.fail(503, times=100)
    rig.start(assessor="gemini")
    incidents = settle(rig, await rig.raise_alarms())
    assert_each_once(rig, incidents, ends=lambda _: "Escalated")
    for incident in incidents.values():
        assert "gemini call failed" in incident["status"]["assessment"]["rationale"]
    print(f"gemini-outage: {100 - rig.gemini.pending()} requests answered 503")
