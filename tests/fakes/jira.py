"""A fake Jira (REST API v2) on loopback, as the `jira` library calls it.

`GET /rest/api/2/serverInfo`, `POST /rest/api/2/issue`,
`GET /rest/api/2/issue/{key}`, `GET|POST /rest/api/2/search` (and Cloud's
`/rest/api/2/search/jql`) for JQL of the form `labels = "x"`, and
`GET|POST /rest/api/2/issue/{key}/comment`, and `GET /rest/api/2/field`
(which `search_issues` reads once). It wants basic auth, refuses an
unknown project or issue type with Jira's 400, stores issues and comments,
and fails on demand: `outage(503)` answers every request with that status
until `recover()`, `fail(500, times=1)` only the next ones; `slow("create",
6)` and `lose("comment")` act on the next such request and then answer late,
or not at all.

Register with `pytest_plugins = ["fakes.jira"]` for the `jira_server` fixture.
"""

from __future__ import annotations

import base64
import itertools
import re
import secrets
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from fakes.loopback import Answer, Call, Served

BASE = "/rest/api/2"
ISSUE = re.compile(rf"^{BASE}/issue/(?P<key>[A-Z][A-Z0-9]*-\d+)$")
COMMENTS = re.compile(rf"^{BASE}/issue/(?P<key>[A-Z][A-Z0-9]*-\d+)/comment$")
LABEL_JQL = re.compile(r'^\s*labels\s*=\s*"?(?P<label>[^"\s]+)"?\s*(ORDER BY .*)?$', re.I)


def _errors(status: int, *messages: str, **fields: str) -> Answer:
    return Answer(status, {"errorMessages": list(messages), "errors": fields})


@dataclass
class FakeJira(Served):
    user: str = "incident-bot@example.com"
    token: str = field(default_factory=lambda: secrets.token_hex(12))
    projects: set[str] = field(default_factory=lambda: {"SCRUM", "OPS"})
    issue_types: set[str] = field(default_factory=lambda: {"Task", "Bug", "Incident"})
    deployment_type: str = "Server"
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _outage: int | None = None
    _failures: deque[int] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(10001))

    # --- scripting ---------------------------------------------------------

    def outage(self, status: int = 503) -> None:
        self._outage = status

    def recover(self) -> None:
        self._outage = None

    def fail(self, status: int = 500, *, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def pending(self) -> int:
        with self._lock:
            return super().pending() + len(self._failures)

    # --- reading -----------------------------------------------------------

    def comments(self, key: str) -> list[str]:
        return [c["body"] for c in self.issues[key]["fields"]["comment"]["comments"]]

    def created(self) -> int:
        return sum(1 for c in self.calls if c.method == "POST" and c.path == f"{BASE}/issue")

    # --- serving -----------------------------------------------------------

    def _serve(self, call: Call) -> Answer:
        with self._lock:
            self.calls.append(call)
            if self._outage is not None:
                return _errors(self._outage, "Service unavailable (fake outage)")
            if self._failures:
                return _errors(self._failures.popleft(), "Internal server error (scripted)")
        expected = base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
        if call.headers.get("authorization") != f"Basic {expected}":
            return _errors(401, "You are not authenticated.")
        with self._lock:
            return self._route(call)

    def _route(self, call: Call) -> Answer:
        path, method = call.path, call.method
        if path == f"{BASE}/serverInfo" and method == "GET":
            return Answer(200, {"baseUrl": self.url, "version": "9.12.0",
                                "versionNumbers": [9, 12, 0],
                                "deploymentType": self.deployment_type,
                                "serverTitle": "Fake Jira"})  # fmt: skip
        if path == f"{BASE}/field" and method == "GET":
            # `search_issues` reads the field list once, to translate JQL names.
            return Answer(200, [
                {"id": name, "key": name, "name": name.capitalize(), "custom": False,
                 "navigable": True, "searchable": True, "clauseNames": [name]}
                for name in ("summary", "description", "labels", "issuetype", "project")
            ])  # fmt: skip
        if path == f"{BASE}/issue" and method == "POST":
            return self._late("create", self._create(call.json() or {}))
        if path in (f"{BASE}/search", f"{BASE}/search/jql"):
            return self._search(call.params(), cloud=path.endswith("/jql"))
        if found := COMMENTS.match(path):
            issue = self.issues.get(found["key"])
            if issue is None:
                return _errors(404, "Issue does not exist or you do not have permission to see it.")
            comments = issue["fields"]["comment"]
            if method == "POST":
                body = (call.json() or {}).get("body", "")
                comment = {"id": str(next(self._ids)), "body": body,
                           "self": f"{self.url}{path}/{len(comments['comments'])}"}  # fmt: skip
                comments["comments"].append(comment)
                comments["total"] = comments["maxResults"] = len(comments["comments"])
                return self._late("comment", Answer(201, comment))
            return Answer(200, {"startAt": 0, **comments})
        if (found := ISSUE.match(path)) and method == "GET":
            issue = self.issues.get(found["key"])
            if issue is None:
                return _errors(404, "Issue does not exist or you do not have permission to see it.")
            return Answer(200, issue)
        return _errors(404, f"no such resource: {method} {path}")

    def _create(self, body: dict[str, Any]) -> Answer:
        fields = body.get("fields") or {}
        project = (fields.get("project") or {}).get("key")
        if project not in self.projects:
            return _errors(400, project="valid project is required")
        if (fields.get("issuetype") or {}).get("name") not in self.issue_types:
            return _errors(400, issuetype="valid issue type is required")
        if not fields.get("summary"):
            return _errors(400, summary="You must specify a summary of the issue.")
        number = 1 + sum(1 for key in self.issues if key.startswith(f"{project}-"))
        key, issue_id = f"{project}-{number}", str(next(self._ids))
        self.issues[key] = {
            "id": issue_id,
            "key": key,
            "self": f"{self.url}{BASE}/issue/{issue_id}",
            "fields": {**fields, "labels": list(fields.get("labels") or []),
                       "comment": {"comments": [], "maxResults": 0, "total": 0}},
        }  # fmt: skip
        return Answer(201, {"id": issue_id, "key": key, "self": self.issues[key]["self"]})

    def _search(self, params: dict[str, Any], *, cloud: bool) -> Answer:
        jql = str(params.get("jql", ""))
        found = LABEL_JQL.match(jql)
        if found is None:
            return _errors(400, f'The fake understands only labels = "x", not: {jql}')
        matching = [i for i in self.issues.values() if found["label"] in i["fields"]["labels"]]
        limit = int(params.get("maxResults") or 50)
        if cloud:
            return Answer(200, {"issues": matching[:limit], "isLast": True})
        start = int(params.get("startAt") or 0)
        return Answer(200, {"startAt": start, "maxResults": limit, "total": len(matching),
                            "issues": matching[start : start + limit]})  # fmt: skip


@pytest.fixture
def jira_server() -> Iterator[FakeJira]:
    """A fresh fake Jira per test; `.url`, `.user` and `.token` for the client."""
    fake = FakeJira().start()
    try:
        yield fake
    finally:
        fake.stop()
