"""Jira: one issue per escalated Incident, found again rather than opened twice;
one comment when it resolves; an outage is reported, never raised."""

from __future__ import annotations

from fakes.jira import FakeJira
from incident_operator.notify.jira import JiraChannel
from notify_support import assessed, incident, moved, notifier, policy, transition


def channel(jira: FakeJira, **kwargs: str) -> JiraChannel:
    return JiraChannel(
        server=jira.url, user=jira.user, token=jira.token, project="SCRUM", issue_type="Task",
        **kwargs,
    )  # fmt: skip


def escalated(**status: object) -> object:
    return incident(
        assessment=assessed("ESCALATE", "notify_team"),
        message="the assessor was unsure",
        **transition("Escalated", ("escalated", "Escalated", "over to a human")),
        **status,
    )


async def test_an_escalation_opens_one_issue_labelled_with_the_incident(
    jira_server: FakeJira,
) -> None:
    link = "https://console.example.com/incidents/{namespace}/{name}"
    tell = notifier(channel(jira_server, link_template=link))
    subject = escalated()
    announced = await tell.announce(subject, policy=policy())
    assert announced.status == "True", announced
    assert announced.notifications == {
        "jira": {"key": "SCRUM-1", "url": f"{jira_server.url}/browse/SCRUM-1"}
    }
    fields = jira_server.issues["SCRUM-1"]["fields"]
    assert fields["issuetype"] == {"name": "Task"}
    assert fields["summary"] == "[high] checkout CPU above 90%"
    assert f"incident-{subject.metadata['uid']}" in fields["labels"]
    assert "{{kubectl -n shop get incident checkout-3f1c2a9b0d4e}}" in fields["description"]
    assert "console.example.com/incidents/shop/checkout-3f1c2a9b0d4e" in fields["description"]
    assert "*Why escalated:* the assessor was unsure" in fields["description"]


async def test_the_policy_picks_project_and_issue_type(jira_server: FakeJira) -> None:
    rules = policy(jira={"project": "OPS", "issueType": "Bug"})
    announced = await notifier(channel(jira_server)).announce(escalated(), policy=rules)
    assert announced.notifications["jira"]["key"] == "OPS-1"
    assert jira_server.issues["OPS-1"]["fields"]["issuetype"] == {"name": "Bug"}


async def test_an_issue_opened_before_a_crash_is_found_not_opened_again(
    jira_server: FakeJira,
) -> None:
    tell = notifier(channel(jira_server))
    subject = escalated()
    first = await tell.announce(subject, policy=policy())
    # Died before the key reached the status: the same transition again.
    again = await notifier(channel(jira_server)).announce(subject, policy=policy())
    assert again.notifications == first.notifications
    assert "found SCRUM-1" in again.message
    assert jira_server.created() == 1 and len(jira_server.issues) == 1


async def test_resolution_comments_once(jira_server: FakeJira) -> None:
    tell = notifier(channel(jira_server))
    subject = escalated()
    opened = await tell.announce(subject, policy=policy())
    resolved = moved(
        subject,
        notifications=opened.notifications,
        message="resolved: the alarm is back to OK",
        **transition("Resolved", ("resolved", "AlarmRecovered", "alarm recovered")),
    )
    commented = await tell.announce(resolved, policy=policy())
    assert commented.notifications == {"jiraCommented": True}
    await tell.announce(resolved, policy=policy())  # a crash before the write
    [comment] = jira_server.comments("SCRUM-1")
    assert "resolved: the alarm is back to OK" in comment
    done = moved(resolved, notifications={**opened.notifications, "jiraCommented": True})
    calls = len(jira_server.calls)
    await tell.announce(done, policy=policy())
    assert len(jira_server.calls) == calls, "nothing more to tell Jira"


async def test_plain_notify_team_opens_an_issue_only_when_the_policy_asks(
    jira_server: FakeJira,
) -> None:
    subject = incident(
        assessment=assessed("SAFE", "notify_team"),
        **transition("Escalated", ("escalated", "NotifyTeam", "telling the team")),
    )
    await notifier(channel(jira_server)).announce(subject, policy=policy())
    assert jira_server.calls == []
    asked = policy(jira={"onNotifyTeam": True})
    announced = await notifier(channel(jira_server)).announce(subject, policy=asked)
    assert announced.notifications["jira"]["key"] == "SCRUM-1"


async def test_other_transitions_leave_jira_alone(jira_server: FakeJira) -> None:
    for phase in ("Assessing", "AwaitingApproval", "Remediating", "Resolved"):
        await notifier(channel(jira_server)).announce(
            incident(**transition(phase)), policy=policy()
        )
    assert jira_server.calls == []


async def test_an_outage_is_reported_with_the_status_and_retried(jira_server: FakeJira) -> None:
    jira_server.outage(503)
    announced = await notifier(channel(jira_server), attempts=3).announce(
        escalated(), policy=policy()
    )
    assert (announced.status, announced.reason) == ("False", "JiraFailed")
    assert "jira: could not reach Jira: HTTP 503" in announced.message
    assert "after 3 attempts" in announced.message
    assert len(jira_server.calls) == 3
    assert announced.notifications == {}


async def test_a_refused_issue_is_not_retried(jira_server: FakeJira) -> None:
    rules = policy(jira={"project": "NOPE"})
    announced = await notifier(channel(jira_server)).announce(escalated(), policy=rules)
    assert announced.reason == "JiraFailed"
    assert "could not create the issue: HTTP 400" in announced.message
    assert jira_server.created() == 1
