"""PagerDuty Events API v2 against the fake: one trigger per escalated Incident
(across a crash too), acknowledgement and resolution mirrored, bursts paced
per routing key under the limit with nothing dropped, 429 and 5xx retried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aws_fixtures import Aws
from fakes.pagerduty import FakePagerDuty
from incident_operator.models import Incident
from incident_operator.notify.delivered import Delivered, DynamoDelivered, MemoryDelivered
from incident_operator.notify.pagerduty import PagerDutyChannel, dedup_key, parse_dedup_key
from notify_support import assessed, incident, moved, notifier, policy, transition

LINK = "https://console.example.com/incidents/{namespace}/{name}"


OPEN: list[PagerDutyChannel] = []


@pytest.fixture(autouse=True)
async def _close_channels() -> AsyncIterator[None]:
    yield
    while OPEN:
        await OPEN.pop().close()


def channel(
    fake: FakePagerDuty, *, delivered: Delivered | None = None, **kw: Any
) -> PagerDutyChannel:
    made = PagerDutyChannel(
        routing_keys={"default": fake.routing_key, **kw.pop("keys", {})},
        delivered=delivered or MemoryDelivered(),
        events_url=fake.events_url,
        link_template=LINK,
        backoff=kw.pop("backoff", 0.02),
        **kw,
    )
    OPEN.append(made)
    return made


def escalated(**status: Any) -> Incident:
    fields = {
        "assessment": assessed("ESCALATE", "restart_service"),
        **transition("Escalated", ("escalated", "Escalated", "over to a human")),
        **status,
    }
    return incident(**fields)


async def test_an_escalation_pages_once_with_severity_details_and_link(
    pagerduty: FakePagerDuty,
) -> None:
    subject = escalated(firstSeen="2026-11-29T09:58:00Z")
    pd = channel(pagerduty)
    announced = await notifier(pd).announce(subject, policy=policy())
    assert (announced.status, announced.reason) == ("True", "Notified"), announced
    key = dedup_key(subject)
    assert announced.notifications == {
        "pagerduty": {"dedupKey": key, "routingKey": "default", "triggered": True}
    }
    assert key == f"shop/checkout-3f1c2a9b0d4e@{subject.metadata['uid']}" and len(key) <= 255
    assert parse_dedup_key(key) == ("shop", "checkout-3f1c2a9b0d4e", subject.metadata["uid"])
    [event] = pagerduty.events()
    assert event["event_action"] == "trigger" and event["dedup_key"] == key
    payload = event["payload"]
    assert payload["severity"] == "error"  # the builder's alarm is "high"
    assert payload["summary"].startswith("[high] ")
    assert payload["custom_details"]["assessment"]["decision"] == "ESCALATE"
    assert payload["custom_details"]["Incident"] == "shop/checkout-3f1c2a9b0d4e"
    assert payload["timestamp"].startswith("2026-11-29T09:58:00")
    link = "https://console.example.com/incidents/shop/checkout-3f1c2a9b0d4e"
    assert event["links"] == [{"href": link, "text": "Incident shop/checkout-3f1c2a9b0d4e"}]
    assert pagerduty.incidents() == 1
    # Recorded in status: the next transitions do not page again.
    later = moved(subject, notifications=announced.notifications)
    assert not pd.wants(later, policy=policy())


async def test_one_trigger_across_a_crash_before_the_status_write(
    aws: Aws, pagerduty: FakePagerDuty
) -> None:
    table = aws.timeline_table()
    subject = escalated()
    store = DynamoDelivered(client=aws.client("dynamodb"), table=table)
    await notifier(channel(pagerduty, delivered=store)).announce(subject, policy=policy())
    # Another process: the status never said so, the record does.
    again_store = DynamoDelivered(client=aws.client("dynamodb"), table=table)
    again = await notifier(channel(pagerduty, delivered=again_store)).announce(
        subject, policy=policy()
    )
    assert again.notifications["pagerduty"]["triggered"] is True
    assert "trigger sent before" in again.message
    assert len(pagerduty.events("trigger")) == 1 and pagerduty.incidents() == 1


async def test_a_trigger_sent_twice_is_one_pagerduty_incident(pagerduty: FakePagerDuty) -> None:
    """Killed between PagerDuty's 202 and the record: sent again, deduplicated."""
    subject = escalated()
    await notifier(channel(pagerduty)).announce(subject, policy=policy())
    await notifier(channel(pagerduty)).announce(subject, policy=policy())  # no record kept
    assert len(pagerduty.events("trigger")) == 2
    assert pagerduty.incidents() == 1


async def test_acknowledgement_and_resolution_are_mirrored(pagerduty: FakePagerDuty) -> None:
    pd = channel(pagerduty)
    subject = escalated()
    told = await notifier(pd).announce(subject, policy=policy())
    acked = moved(
        subject,
        notifications=told.notifications,
        acknowledgement={"by": "U0ALICE", "at": "2026-11-29T10:02:00Z", "via": "slack"},
    )
    told = await notifier(pd).announce(acked, policy=policy())
    assert told.notifications["pagerduty"]["acknowledged"] is True
    key = dedup_key(subject)
    assert pagerduty.alert(key).status == "acknowledged"
    resolved = moved(acked, notifications=told.notifications, phase="Resolved")
    told = await notifier(pd).announce(resolved, policy=policy())
    assert told.notifications["pagerduty"] == {
        "dedupKey": key, "routingKey": "default", "triggered": True, "acknowledged": True,
        "resolved": True,
    }  # fmt: skip
    assert pagerduty.alert(key).status == "resolved"
    assert [e["event_action"] for e in pagerduty.events()] == ["trigger", "acknowledge", "resolve"]
    assert not pd.wants(moved(resolved, notifications=told.notifications), policy=policy())


async def test_an_acknowledgement_from_pagerduty_is_not_sent_back(
    pagerduty: FakePagerDuty,
) -> None:
    pd = channel(pagerduty)
    subject = escalated()
    told = await notifier(pd).announce(subject, policy=policy())
    acked = moved(
        subject,
        notifications=told.notifications,
        acknowledgement={"by": "Alice", "at": "2026-11-29T10:02:00Z", "via": "pagerduty"},
    )
    assert not pd.wants(acked, policy=policy())


async def test_what_pages_follows_the_policy(pagerduty: FakePagerDuty) -> None:
    pd = channel(pagerduty, keys={"payments": pagerduty.routing_key})
    awaiting = incident(assessment=assessed(), **transition("AwaitingApproval"))
    assert not pd.wants(awaiting, policy=policy())
    assert pd.wants(awaiting, policy=policy(pagerduty={"triggerOn": ["AwaitingApproval"]}))
    notify_team = escalated(assessment=assessed("SAFE", "notify_team"))
    assert not pd.wants(notify_team, policy=policy())
    assert pd.wants(notify_team, policy=policy(pagerduty={"onNotifyTeam": True}))
    # A resolution of what was never paged is not sent.
    assert not pd.wants(incident(**transition("Resolved")), policy=policy())
    # A policy naming another routing key pages it; an unknown name is a failure.
    named = await notifier(pd).announce(
        escalated(), policy=policy(pagerduty={"routingKey": "payments"})
    )
    assert named.status == "True" and "(payments)" in named.message
    unknown = await notifier(pd).announce(
        escalated(), policy=policy(pagerduty={"routingKey": "billing"})
    )
    assert (unknown.status, unknown.reason) == ("False", "PagerdutyFailed")
    assert "no PagerDuty routing key named 'billing'" in unknown.message
    assert pagerduty.routing_key not in unknown.message


async def test_a_resolution_before_the_queued_trigger_was_taken_still_resolves(
    pagerduty: FakePagerDuty,
) -> None:
    pagerduty.outage(503)
    pd = channel(pagerduty, wait=0.05, keys={"payments": pagerduty.routing_key})
    paged = policy(pagerduty={"routingKey": "payments"})
    subject = escalated()
    queued = await notifier(pd).announce(subject, policy=paged)
    assert (queued.status, queued.reason) == ("Unknown", "PagerdutyQueued"), queued
    ref = queued.notifications["pagerduty"]
    assert ref == {"dedupKey": dedup_key(subject), "routingKey": "payments", "triggered": False}
    # Written so; the alarm recovers before PagerDuty is back, and the policy
    # changed meanwhile: the resolve still follows the trigger, to its key.
    resolved = moved(subject, notifications=queued.notifications, phase="Resolved")
    assert pd.wants(resolved, policy=policy())
    again = await notifier(pd).announce(resolved, policy=policy())
    assert again.status == "Unknown"
    pagerduty.recover()
    while pd.outbox.depth():
        await asyncio.sleep(0.02)
    told = await notifier(pd).announce(resolved, policy=policy())
    assert told.notifications["pagerduty"]["resolved"] is True, told
    assert [e["event_action"] for e in pagerduty.events()] == ["trigger", "resolve"]
    assert pagerduty.alert(dedup_key(subject)).status == "resolved"


async def test_5xx_is_retried_and_400_is_a_failure(pagerduty: FakePagerDuty) -> None:
    pagerduty.fail(503, times=3)
    told = await notifier(channel(pagerduty)).announce(escalated(), policy=policy())
    assert told.status == "True", told
    assert len(pagerduty.events("trigger")) == 1
    wrong = PagerDutyChannel(
        routing_keys={"default": "not-a-key"}, delivered=MemoryDelivered(),
        events_url=pagerduty.events_url, backoff=0.02,
    )  # fmt: skip
    OPEN.append(wrong)
    refused = await notifier(wrong).announce(escalated(), policy=policy())
    assert (refused.status, refused.reason) == ("False", "PagerdutyFailed")
    assert "PagerDuty refused the trigger: HTTP 400" in refused.message
    assert "Invalid routing key" in refused.message


async def burst(pagerduty: FakePagerDuty, pd: PagerDutyChannel, count: int) -> float:
    """`count` Incidents escalating at once; seconds until every event was taken."""
    subjects = [escalated() for _ in range(count)]
    started = time.monotonic()
    fanout = notifier(pd, timeout=10.0)
    results = await asyncio.gather(*(fanout.announce(s, policy=policy()) for s in subjects))
    queued = [r for r in results if r.status == "Unknown"]
    assert queued and all(r.reason == "PagerdutyQueued" for r in queued)
    assert all(r.status in ("True", "Unknown") for r in results)
    while pd.outbox.depth() > 0:
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    # Told again (the retell), each finds its trigger sent.
    again = await asyncio.gather(*(fanout.announce(s, policy=policy()) for s in queued_of(
        subjects, results)))  # fmt: skip
    assert all(r.status == "True" and "sent before" in r.message for r in again)
    triggers = pagerduty.events("trigger")
    assert len(triggers) == count, "nothing dropped, nothing sent twice"
    assert len({e["dedup_key"] for e in triggers}) == count
    return elapsed


def queued_of(subjects: list[Incident], results: list[Any]) -> list[Incident]:
    return [s for s, r in zip(subjects, results, strict=True) if r.status == "Unknown"]


async def test_a_burst_of_200_is_paced_under_the_limit(pagerduty: FakePagerDuty) -> None:
    # Time scaled down 60 times: PagerDuty's 120 a minute becomes 120 a second,
    # and the channel paces at 100 "a minute" = 100 a second.
    pagerduty.limit, pagerduty.window = 120, 1.0
    pd = channel(pagerduty, per_minute=100 * 60, wait=0.2)
    elapsed = await burst(pagerduty, pd, 200)
    assert pagerduty.throttled == 0
    assert pagerduty.busiest_window() <= 100
    assert elapsed >= 1.9, "paced: 200 events at 100 a second take about 2 s"
    print(f"200 triggers in {elapsed:.2f}s, busiest window {pagerduty.busiest_window()}")


async def test_429_is_waited_out_and_nothing_is_dropped(pagerduty: FakePagerDuty) -> None:
    # PagerDuty takes fewer than the channel sends: it answers 429s.
    pagerduty.limit, pagerduty.window = 40, 1.0
    pd = channel(pagerduty, per_minute=100 * 60, wait=0.2, backoff=0.1)
    elapsed = await burst(pagerduty, pd, 200)
    assert pagerduty.throttled > 0
    assert pagerduty.busiest_window() <= 40
    print(f"200 triggers in {elapsed:.2f}s with {pagerduty.throttled} 429s")


def test_the_settings_make_the_channels_and_say_what_is_wrong() -> None:
    from pydantic import SecretStr

    from incident_operator.config import Settings
    from incident_operator.notify.factory import build_channels

    hooks = '[{"url": "https://hooks.example.com/in", "secret": "s3cret"}]'
    settings = Settings(
        pagerduty_routing_key=SecretStr("R0DEFAULT"),
        pagerduty_routing_keys=SecretStr("payments=R0PAYMENTS, billing=R0BILLING"),
        outbound_webhooks=SecretStr(hooks),
    )
    channels = {c.name: c for c in build_channels(settings)}
    assert set(channels) == {"pagerduty", "webhooks"}
    assert channels["pagerduty"]._keys == {  # type: ignore[attr-defined]
        "default": "R0DEFAULT", "payments": "R0PAYMENTS", "billing": "R0BILLING"
    }  # fmt: skip
    assert build_channels(Settings()) == []
    with pytest.raises(ValueError, match="entry 2: expected name=key") as bad:
        Settings(pagerduty_routing_keys=SecretStr("a=R0A,R0SECRETVALUE"))
    assert "R0SECRETVALUE" not in str(bad.value)
