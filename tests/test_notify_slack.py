"""Slack: one message per Incident, updated in place, its story in the thread;
nothing twice, even when the status never learned what was posted."""

from __future__ import annotations

from fakes.slack import FakeSlack
from incident_operator.slack.api import slack_client
from incident_operator.slack.channel import SlackChannel
from notify_support import assessed, incident, moved, notifier, policy, transition

CHANNEL = "C0INCIDENTS"


def channel(slack: FakeSlack, *, default: str | None = CHANNEL) -> SlackChannel:
    client = slack_client(token=slack.token, base_url=slack.api_url)
    return SlackChannel(client=client, default_channel=default)


async def test_first_transition_posts_one_message_and_later_ones_update_it(
    slack: FakeSlack,
) -> None:
    tell = notifier(channel(slack))
    first = incident(**transition("Assessing", ("received", "Triggered", "high alarm")))
    announced = await tell.announce(first, policy=policy())
    assert announced.status == "True", announced
    [message] = slack.top_level(CHANNEL)
    assert announced.notifications == {"slack": {"channel": CHANNEL, "ts": message.ts}}
    assert message.metadata == {
        "event_type": "incident",
        "event_payload": {"uid": first.metadata["uid"], "incident": "shop/checkout-3f1c2a9b0d4e"},
    }
    # Open and nobody on it yet: anyone may take it.
    assert message.buttons == ["incident_acknowledge", "incident_silence", "incident_timeline"]
    assert [m.text for m in slack.thread(message)] == ["*Triggered*: high alarm"]

    pending = moved(
        first,
        notifications=announced.notifications,
        assessment=assessed(),
        approval={"required": True, "state": "Pending"},
        **transition("AwaitingApproval", ("assessment", "Assessed", "rules decided SAFE"),
                     ("approval_requested", "ApprovalRequested", "restart needs approval")),
    )  # fmt: skip
    announced = await tell.announce(pending, policy=policy())
    assert announced.status == "True", announced
    assert slack.top_level() == [message], "never a second top-level message"
    assert message.updates == 1
    assert message.buttons == [
        "incident_approve", "incident_reject", "incident_silence", "incident_timeline"
    ]  # fmt: skip
    [approve] = [
        e for b in message.blocks if b["type"] == "actions" for e in b["elements"]
        if e["action_id"] == "incident_approve"
    ]  # fmt: skip
    assert approve["value"] == "shop/checkout-3f1c2a9b0d4e"
    assert "*Phase*\nAwaitingApproval" in message.shown
    assert [m.text for m in slack.thread(message)][1:] == [
        "*Assessed*: rules decided SAFE",
        "*ApprovalRequested*: restart needs approval",
    ]

    # Approved: the buttons go, whatever happens next.
    approved = moved(
        pending,
        approval={"required": True, "state": "Approved", "by": "U01ALICE", "via": "slack"},
        **transition("Remediating", ("approval", "Approved", "restart approved")),
    )
    await tell.announce(approved, policy=policy())
    assert message.buttons == ["incident_silence", "incident_timeline"]
    assert "approved by <@U01ALICE> via slack" in message.shown


async def test_a_crash_before_the_status_write_does_not_post_twice(slack: FakeSlack) -> None:
    tell = notifier(channel(slack))
    first = incident(**transition("Assessing", ("received", "Triggered", "high alarm")))
    await tell.announce(first, policy=policy())
    # The operator died before writing the ts: the same transition comes again,
    # from a status that knows nothing of the message.
    again = await tell.announce(first, policy=policy())
    [message] = slack.top_level()
    assert again.notifications == {"slack": {"channel": CHANNEL, "ts": message.ts}}
    assert len(slack.thread(message)) == 1, "the thread reply was not repeated either"
    assert slack.count("chat.postMessage") == 2  # the message and its one reply
    history = [c for c in slack.calls if c.path == "/api/conversations.history"]
    assert history and history[-1].query["include_all_metadata"] == "1"


async def test_the_message_is_found_past_the_first_page_of_history(slack: FakeSlack) -> None:
    tell = notifier(channel(slack))
    first = incident(**transition("Assessing", ("received", "Triggered", "high alarm")))
    await tell.announce(first, policy=policy())
    # 250 newer messages: history lists 200 a page, newest first.
    for index in range(250):
        await channel(slack)._client.chat_postMessage(channel=CHANNEL, text=f"noise {index}")
    await tell.announce(first, policy=policy())
    mine = [m for m in slack.top_level(CHANNEL) if m.metadata]
    assert len(mine) == 1, "posted again: the second page was not read"
    pages = [c for c in slack.calls if c.path == "/api/conversations.history"]
    assert [c.query.get("cursor") for c in pages][-2:] == [None, "200"]


async def test_another_incidents_message_is_not_taken_for_ours(slack: FakeSlack) -> None:
    tell = notifier(channel(slack))
    await tell.announce(incident(name="checkout-aaaaaaaaaaaa"), policy=policy())
    await tell.announce(incident(name="checkout-bbbbbbbbbbbb"), policy=policy())
    assert len(slack.top_level()) == 2


async def test_the_policy_channel_wins_over_the_default(slack: FakeSlack) -> None:
    tell = notifier(channel(slack))
    announced = await tell.announce(incident(), policy=policy(slack={"channel": "C0PAYMENTS"}))
    assert announced.notifications["slack"]["channel"] == "C0PAYMENTS"
    assert slack.top_level("C0PAYMENTS") and not slack.top_level(CHANNEL)


async def test_rate_limit_is_waited_out(slack: FakeSlack) -> None:
    slack.rate_limit("chat.postMessage", retry_after=1)
    announced = await notifier(channel(slack)).announce(incident(), policy=policy())
    assert announced.status == "True", announced
    assert len(slack.top_level()) == 1
    assert slack.count("chat.postMessage") == 2  # the 429, then the post


async def test_a_slack_error_is_reported_and_not_retried_when_it_cannot_pass(
    slack: FakeSlack,
) -> None:
    slack.fail("chat.postMessage", "not_in_channel")
    announced = await notifier(channel(slack)).announce(incident(), policy=policy())
    assert (announced.status, announced.reason) == ("False", "SlackFailed")
    assert "could not post the message: not_in_channel" in announced.message
    assert slack.count("chat.postMessage") == 1
    assert announced.notifications == {}


async def test_transient_errors_are_retried(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", "internal_error", times=2)
    announced = await notifier(channel(slack)).announce(incident(), policy=policy())
    assert announced.status == "True", announced
    assert slack.count("chat.postMessage") == 3


async def test_no_channel_anywhere_is_a_clear_failure(slack: FakeSlack) -> None:
    announced = await notifier(channel(slack, default=None)).announce(incident(), policy=policy())
    assert announced.reason == "SlackFailed"
    assert "SLACK_CHANNEL" in announced.message
    assert not slack.calls


async def test_the_breaker_opens_after_repeated_failures_and_says_so(slack: FakeSlack) -> None:
    now = [0.0]
    tell = notifier(channel(slack), attempts=1, breaker_failures=2, breaker_cooloff=30,
                    clock=lambda: now[0])  # fmt: skip
    slack.fail("chat.postMessage", "internal_error", times=2)
    for _ in range(2):
        assert (await tell.announce(incident(), policy=policy())).reason == "SlackFailed"
    calls = len(slack.calls)
    skipped = await tell.announce(incident(), policy=policy())
    assert (skipped.status, skipped.reason) == ("False", "SlackCircuitOpen")
    assert "circuit open for another 30s after 2 failures" in skipped.message
    assert "internal_error" in skipped.message
    assert len(slack.calls) == calls, "an open breaker calls nobody"
    now[0] = 31.0  # cooled off: one call goes through, and it works
    assert (await tell.announce(incident(), policy=policy())).status == "True"


async def test_the_message_says_what_is_approved_what_is_missing_and_reveals_hidden_text(
    slack: FakeSlack,
) -> None:
    tell = notifier(channel(slack))
    target = "us-east-1/demo/checkout"
    pending = incident(
        assessment=assessed(),
        approval={
            "required": True,
            "state": "Pending",
            "action": "restart_service",
            "target": target,
        },
        truncatedAlerts=3,
        **transition("AwaitingApproval", ("approval_requested", "ApprovalRequested", "asked")),
    )
    pending.spec.summary = "CPU high \u202eesrever\u202c"
    pending.status.assessment = None
    await tell.announce(pending, policy=policy())
    [message] = slack.top_level(CHANNEL)
    assert f"waiting for approval of restart_service on {target}" in message.shown
    assert "3 more alert(s) of this Alertmanager group were left out" in message.shown
    # A bidi override would make the text read backwards: it is spelled out.
    assert "\\u202eesrever\\u202c" in message.shown and "\u202e" not in message.shown


async def test_with_a_link_template_view_timeline_opens_the_incidents_page(
    slack: FakeSlack,
) -> None:
    client = slack_client(token=slack.token, base_url=slack.api_url)
    linked = SlackChannel(
        client=client,
        default_channel=CHANNEL,
        link_template="https://incidents.example.com/incidents/{namespace}/{name}",
    )
    first = incident(**transition("Assessing", ("received", "Triggered", "high alarm")))
    await notifier(linked).announce(first, policy=policy())
    [message] = slack.top_level(CHANNEL)
    [timeline] = [
        e for b in message.blocks if b["type"] == "actions" for e in b["elements"]
        if e["action_id"] == "incident_timeline"
    ]  # fmt: skip
    assert timeline["url"] == "https://incidents.example.com/incidents/shop/checkout-3f1c2a9b0d4e"
    # Without one, the button only asks the webhook for the timeline.
    other = incident(name="other", **transition("Assessing", ("received", "Triggered", "x")))
    await notifier(channel(slack)).announce(other, policy=policy())
    unlinked = [
        e for m in slack.top_level(CHANNEL) if m is not message for b in m.blocks
        if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "incident_timeline"
    ]  # fmt: skip
    assert len(unlinked) == 1 and "url" not in unlinked[0]
