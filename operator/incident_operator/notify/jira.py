"""Jira: one issue per escalated Incident, and one comment when it resolves.

An issue is opened when an Incident is Escalated (for a plain notify_team
only if the policy's notify.jira.onNotifyTeam says so). It carries a label
made from the Incident's uid; before opening one, we search for that label,
so an operator that died between creating the issue and recording its key
finds it instead of opening a second. The resolution comment carries a
marker and is looked for the same way before it is added.

The `jira` client is blocking: every call runs in a thread. Its own retries
are off (`max_retries=0`): the fan-out retries with a deadline, and the
client's would sleep up to a minute. The client is built with
`get_server_info=True` (one call per process): it is how it learns whether
it talks to Jira Cloud, where the classic `/search` endpoint is gone and
`search_issues` must use `/search/jql` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

import requests
from jira import JIRA, JIRAError

from ..models import Incident
from ..policy import Policy
from .channel import ChannelFailed, Told
from .story import describe

_T = TypeVar("_T")


def issue_label(incident: Incident) -> str:
    return f"incident-{incident.metadata.get('uid', '')}"


def resolution_marker(incident: Incident) -> str:
    return f"[incident-operator:resolved:{incident.metadata.get('uid', '')}]"


def wants_issue(incident: Incident, policy: Policy) -> bool:
    """Escalations get an issue; a plain notify_team only when the policy asks."""
    assessment = incident.status.assessment
    plain_notify = (
        assessment is not None
        and assessment.decision == "SAFE"
        and assessment.action == "notify_team"
    )
    if not plain_notify:
        return True
    target = policy.spec.notify.jira
    return bool(target and target.on_notify_team)


class JiraChannel:
    name = "jira"

    def __init__(
        self,
        *,
        server: str,
        user: str,
        token: str,
        project: str,
        issue_type: str,
        link_template: str | None = None,
        timeout: tuple[float, float] = (3.05, 5.0),
    ) -> None:
        self._server = server.rstrip("/")
        self._auth = (user, token)
        self._project = project
        self._issue_type = issue_type
        self._link_template = link_template
        self._timeout = timeout
        self._client: JIRA | None = None
        self._client_lock = threading.Lock()

    def wants(self, incident: Incident, *, policy: Policy) -> bool:
        status = incident.status
        notifications = status.notifications
        issue = notifications.jira if notifications else None
        if status.phase == "Escalated":
            return issue is None and wants_issue(incident, policy)
        if status.phase == "Resolved":
            return issue is not None and not (notifications and notifications.jira_commented)
        return False

    async def tell(self, incident: Incident, *, policy: Policy) -> Told:
        notifications = incident.status.notifications
        issue = notifications.jira if notifications else None
        if issue is None:
            key, url, found = await asyncio.to_thread(self._open_issue, incident, policy)
            return Told(
                {"jira": {"key": key, "url": url}}, f"{'found' if found else 'opened'} {key}"
            )
        await asyncio.to_thread(self._comment, issue.key, incident)
        return Told({"jiraCommented": True}, f"commented on {issue.key}")

    # --- the blocking halves, run in a thread ------------------------------

    def _jira(self) -> JIRA:
        with self._client_lock:
            if self._client is None:
                self._client = _call(
                    "reach Jira",
                    lambda: JIRA(
                        server=self._server,
                        basic_auth=self._auth,
                        get_server_info=True,
                        max_retries=0,
                        timeout=self._timeout,
                    ),
                )
            return self._client

    def _open_issue(self, incident: Incident, policy: Policy) -> tuple[str, str, bool]:
        jira = self._jira()
        label = issue_label(incident)
        found = _call(
            "search for an earlier issue",
            lambda: jira.search_issues(f'labels = "{label}"', maxResults=1, fields="summary"),
        )
        if found:
            issue = found[0]
            return str(issue.key), str(issue.permalink()), True
        target = policy.spec.notify.jira
        fields = {
            "project": {"key": (target.project if target else None) or self._project},
            "issuetype": {"name": target.issue_type if target else self._issue_type},
            "summary": f"[{incident.spec.severity}] {incident.spec.title}"[:255],
            "description": describe(
                incident,
                link_template=self._link_template,
                label=lambda name: f"*{name}:*",
                code=lambda text: "{{" + text + "}}",
            ),
            "labels": [label, "incident-operator"],
        }
        # prefetch=False: the key is in the answer; re-reading the issue is a
        # second call that could fail after the issue exists.
        created = _call(
            "create the issue", lambda: jira.create_issue(fields=fields, prefetch=False)
        )
        return str(created.key), str(created.permalink()), False

    def _comment(self, key: str, incident: Incident) -> None:
        jira = self._jira()
        marker = resolution_marker(incident)
        comments = _call("read the issue's comments", lambda: jira.comments(key))
        if any(marker in (getattr(comment, "body", "") or "") for comment in comments):
            return  # added before a crash; the status just never said so
        message = incident.status.message or "resolved"
        body = f"The incident is resolved: {message}\n\n{marker}"
        _call("comment on the issue", lambda: jira.add_comment(key, body))


def _call(doing: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except JIRAError as error:
        status = error.status_code
        retryable = status is None or status == 429 or status >= 500
        detail = (error.text or "").strip().splitlines()[0][:300] if error.text else ""
        raise ChannelFailed(
            f"could not {doing}: HTTP {status}" + (f": {detail}" if detail else ""),
            retryable=retryable,
        ) from error
    except requests.RequestException as error:
        raise ChannelFailed(
            f"could not {doing}: {type(error).__name__}: {error}", retryable=True
        ) from error
