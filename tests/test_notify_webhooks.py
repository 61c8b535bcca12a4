"""Outbound webhooks: each transition a signed CloudEvent that the README's
verification code accepts, retried until taken, once per transition across a
crash, with an id a receiver dedupes on."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aws_fixtures import Aws
from fakes.receiver import Receiver
from incident_operator.notify.delivered import Delivered, DynamoDelivered, MemoryDelivered
from incident_operator.notify.webhooks import Target, WebhooksChannel, signature
from notify_support import assessed, incident, moved, notifier, policy, transition

README = Path(__file__).parent.parent / "README.md"
OPEN: list[WebhooksChannel] = []


def readme_verify() -> Callable[..., bool]:
    """The receiver's verification snippet, as the README prints it."""
    text = README.read_text()
    found = re.search(r"<!-- webhook-verify -->\n```python\n(.*?)```", text, re.S)
    assert found, "the README's verification snippet is missing"
    scope: dict[str, Any] = {}
    exec(found.group(1), scope)
    verify: Callable[..., bool] = scope["verify"]
    return verify


@pytest.fixture
def verifying(receiver: Receiver) -> Receiver:
    receiver.verify = readme_verify()
    return receiver


@pytest.fixture(autouse=True)
async def _close_channels() -> AsyncIterator[None]:
    yield
    while OPEN:
        await OPEN.pop().close()


def channel(*receivers: Receiver, delivered: Delivered | None = None, **kw: Any) -> WebhooksChannel:
    made = WebhooksChannel(
        targets=[Target(url=f"{r.url}/incidents?token=abc", secret=r.secret) for r in receivers],
        delivered=delivered or MemoryDelivered(),
        backoff=0.02,
        **kw,
    )
    OPEN.append(made)
    return made


def escalated() -> Any:
    return incident(
        assessment=assessed("ESCALATE", "restart_service"),
        **transition("Escalated", ("escalated", "Escalated", "over to a human")),
    )


async def test_each_transition_is_a_signed_cloudevent(verifying: Receiver) -> None:
    hooks = channel(verifying, link_template="https://console.example.com/{namespace}/{name}")
    subject = escalated()
    told = await notifier(hooks).announce(subject, policy=policy())
    assert told.status == "True", told
    [call] = verifying.calls
    assert call.path == "/incidents" and call.query == {"token": "abc"}
    assert call.headers["content-type"] == "application/cloudevents+json; charset=utf-8"
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", call.headers["x-incident-operator-signature"])
    [event] = verifying.events()
    assert event["specversion"] == "1.0"
    assert event["type"] == "dev.incident-response.incident.escalated"
    assert event["source"] == (
        "/apis/incident-response.dev/v1alpha1/namespaces/shop/incidents/checkout-3f1c2a9b0d4e"
    )
    assert event["subject"] == "shop/checkout-3f1c2a9b0d4e"
    assert re.fullmatch(r"[0-9a-f]{64}", event["id"])
    data = event["data"]
    assert data["uid"] == subject.metadata["uid"] and data["phase"] == "Escalated"
    assert data["records"] == [{"kind": "escalated", "reason": "Escalated",
                                "message": "over to a human", "warning": False}]  # fmt: skip
    assert data["assessment"]["decision"] == "ESCALATE"
    assert data["link"] == "https://console.example.com/shop/checkout-3f1c2a9b0d4e"
    # The next transition is another event, with another id.
    acked = moved(
        subject,
        acknowledgement={"by": "U0ALICE", "at": "2026-11-29T10:02:00Z", "via": "slack"},
        **transition("Escalated", ("acknowledged", "Acknowledged", "acknowledged by U0ALICE")),
    )
    await notifier(hooks).announce(acked, policy=policy())
    first, second = verifying.events()
    assert second["id"] != first["id"]
    assert second["data"]["acknowledgement"]["via"] == "slack"
    # A transition that records nothing is not sent.
    assert not hooks.wants(incident(**transition("Remediating")), policy=policy())


def test_the_readme_verification_refuses_what_it_should() -> None:
    verify = readme_verify()
    body, now = b'{"id":"x"}', time.time()
    header = signature("s3cret", body, timestamp=int(now))
    assert verify("s3cret", body, header, now)
    assert not verify("other", body, header, now)
    assert not verify("s3cret", body + b" ", header, now)
    assert not verify("s3cret", body, header, now + 301), "a replay, too late"
    assert not verify("s3cret", body, "v1=" + header.split("v1=")[1], now)
    assert not verify("s3cret", body, "", now)


async def test_a_receiver_that_fails_gets_it_again_and_once(verifying: Receiver) -> None:
    verifying.fail(503, times=2)
    verifying.fail(429, times=1)
    subject = escalated()
    told = await notifier(channel(verifying)).announce(subject, policy=policy())
    assert told.status == "True", told
    assert len(verifying.calls) == 4
    assert len(verifying.received) == 1


async def test_a_refusal_is_a_failure(verifying: Receiver) -> None:
    wrong = Receiver(secret="not-the-receivers").start()
    try:
        hooks = WebhooksChannel(
            targets=[Target(url=verifying.url, secret=wrong.secret)],
            delivered=MemoryDelivered(), backoff=0.02,
        )  # fmt: skip
        OPEN.append(hooks)
        told = await notifier(hooks).announce(escalated(), policy=policy())
    finally:
        wrong.stop()
    assert (told.status, told.reason) == ("False", "WebhooksFailed")
    assert "refused event" in told.message and "HTTP 401" in told.message
    assert "token" not in told.message
    assert len(verifying.refused) == 1, "a refusal is not retried"


async def test_once_per_transition_across_a_crash(aws: Aws, verifying: Receiver) -> None:
    table = aws.timeline_table()
    subject = escalated()
    for _ in range(2):  # the second: another process, the status never written
        store = DynamoDelivered(client=aws.client("dynamodb"), table=table)
        told = await notifier(channel(verifying, delivered=store)).announce(
            subject, policy=policy()
        )
        assert told.status == "True", told
    assert len(verifying.received) == 1
    # Without the records, sent again: with the same id, for the receiver to drop.
    await notifier(channel(verifying)).announce(subject, policy=policy())
    assert len(verifying.received) == 2 and len(verifying.events()) == 1


async def test_a_receiver_that_is_down_is_queued_not_dropped(verifying: Receiver) -> None:
    verifying.fail(503, times=5)
    hooks = channel(verifying, wait=0.05)
    subject = escalated()
    told = await notifier(hooks).announce(subject, policy=policy())
    assert (told.status, told.reason) == ("Unknown", "WebhooksQueued"), told
    while hooks.outbox.depth():
        await asyncio.sleep(0.02)
    again = await notifier(hooks).announce(subject, policy=policy())
    assert again.status == "True"
    assert len(verifying.received) == 1
