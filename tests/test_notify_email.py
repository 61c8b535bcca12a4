"""Email through SES (moto): once per escalated Incident, claimed in DynamoDB
before sending, never sent twice across a crash; failures reported."""

from __future__ import annotations

from aws_fixtures import Aws
from incident_operator.models import Incident
from incident_operator.notify.email import DynamoEmailClaims, EmailChannel, MemoryEmailClaims
from incident_operator.notify.story import describe
from notify_support import assessed, incident, notifier, policy, transition

SENDER = "incidents@example.com"
ONCALL = "oncall@example.com"


def channel(aws: Aws, *, table: str | None = None, verified: bool = True) -> EmailChannel:
    ses = aws.client("ses")
    if verified:
        ses.verify_email_identity(EmailAddress=SENDER)
    claims = (
        DynamoEmailClaims(client=aws.client("dynamodb"), table=table)
        if table
        else MemoryEmailClaims()
    )
    return EmailChannel(client=ses, claims=claims, sender=SENDER, recipients=[ONCALL])


def escalated() -> object:
    return incident(
        assessment=assessed("ESCALATE", "notify_team"),
        **transition("Escalated", ("escalated", "Escalated", "over to a human")),
    )


def sent(aws: Aws) -> int:
    return int(aws.client("ses", record=False).get_send_quota()["SentLast24Hours"])


async def test_an_escalation_is_emailed_once_across_a_crash(aws: Aws) -> None:
    table = aws.timeline_table()
    subject = escalated()
    first = await notifier(channel(aws, table=table)).announce(subject, policy=policy())
    assert first.status == "True", first
    message_id = first.notifications["email"]["messageId"]
    assert sent(aws) == 1
    # Another process, after a crash before the status write: the claim is found.
    again = await notifier(channel(aws, table=table)).announce(subject, policy=policy())
    assert again.notifications == {"email": {"messageId": message_id}}
    assert "sent before" in again.message
    assert sent(aws) == 1
    claim = aws.client("dynamodb").get_item(
        TableName=table,
        Key={
            "incident_id": {"S": "guard#email#shop/checkout-3f1c2a9b0d4e"},
            "ts": {"S": f"escalated#{subject.metadata['uid']}"},
        },
    )["Item"]
    assert claim["message_id"] == {"S": message_id}


async def test_without_a_table_once_per_process(aws: Aws) -> None:
    tell = notifier(channel(aws))
    subject = escalated()
    await tell.announce(subject, policy=policy())
    await tell.announce(subject, policy=policy())
    assert sent(aws) == 1


async def test_policy_recipients_win(aws: Aws) -> None:
    rules = policy(email={"recipients": ["payments@example.com", "sre@example.com"]})
    announced = await notifier(channel(aws)).announce(escalated(), policy=rules)
    assert "sent to 2 recipients" in announced.message
    assert sent(aws) == 2  # SES counts recipients


async def test_only_escalations_are_emailed(aws: Aws) -> None:
    tell = notifier(channel(aws))
    for phase in ("Assessing", "AwaitingApproval", "Remediating", "Resolved"):
        await tell.announce(incident(**transition(phase)), policy=policy())
    assert sent(aws) == 0


async def test_an_unverified_sender_is_reported_and_the_claim_released(aws: Aws) -> None:
    table = aws.timeline_table()
    subject = escalated()
    refused = await notifier(channel(aws, table=table, verified=False)).announce(
        subject, policy=policy()
    )
    assert (refused.status, refused.reason) == ("False", "EmailFailed")
    assert "MessageRejected" in refused.message
    assert aws.count("ses.SendEmail") == 1, "a rejection is not retried"
    # Once the sender is verified, the next attempt may send: nothing was claimed.
    retried = await notifier(channel(aws, table=table)).announce(subject, policy=policy())
    assert retried.status == "True", retried
    assert sent(aws) == 1


def test_the_escalation_text_spells_hidden_characters_out() -> None:
    # Jira issues and emails show alarm text: a bidi override there would make
    # it read as something else.
    subject = escalated()
    assert isinstance(subject, Incident)
    subject.spec.summary = "disk \u202eecafrus\u202c full"
    text = describe(subject, link_template=None)
    assert "\\u202eecafrus\\u202c" in text and "\u202e" not in text
