"""The web UI over HTTP (no browser): who gets in, the headers every answer
carries, escaping of hostile alarm text, and the pure parts (filters,
durations, analytics, the story)."""

from __future__ import annotations

import html.parser
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from kubernetes import client

from incident_operator.cli import main
from incident_operator.config import Settings
from incident_operator.models import Incident
from incident_operator.reconcile.phases import QUIET_RESOLUTION
from incident_operator.timeline import Entry
from incident_operator.timeline.dynamodb import LogTimeline
from incident_operator.ui import analytics, listing, story, times
from incident_operator.ui.app import CONTENT_SECURITY_POLICY, create_app, kubernetes_events
from incident_operator.ui.watch import IncidentWatch
from ui_support import XSS, at, create_incident, post_event
from webhook_support import new_token

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

# --- the app, on a real API server -----------------------------------------------


@pytest.fixture
def watch(api: client.ApiClient, namespace: str, crds_installed: None) -> Iterator[IncidentWatch]:
    following = IncidentWatch(api=api, namespace=namespace).start()
    assert following.wait_synced(10)
    try:
        yield following
    finally:
        following.stop()


def ui_client(
    watch: IncidentWatch, api: client.ApiClient, timeline: Any = None, **settings: Any
) -> httpx.AsyncClient:
    app = create_app(
        settings=Settings(**settings),
        watch=watch,
        events=kubernetes_events(api),
        timeline=timeline,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ui")


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PAGES = ["/", "/rows", "/stream", "/analytics", "/incidents/ns/name"]


async def test_without_a_valid_token_every_page_is_401(
    watch: IncidentWatch, api: client.ApiClient
) -> None:
    token = new_token()
    async with ui_client(watch, api, ui_tokens=token) as ui:
        for path in PAGES:
            for headers in [
                {},
                {"Authorization": f"Bearer not-{token}"},
                {"Authorization": token},
                {"Cookie": f"incident_ui_token=x{token}"},
            ]:
                answer = await ui.get(path, headers=headers)
                assert answer.status_code == 401, (path, headers)
                assert answer.headers["WWW-Authenticate"] == "Bearer"
        # A browser gets the sign-in form (still 401); a program gets text.
        page = await ui.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 401 and 'action="/login"' in page.text
        assert (await ui.get("/", headers={"Accept": "*/*"})).text == "not signed in"
        for open_path in ["/healthz", "/readyz", "/login", "/static/ui.js", "/static/ui.css"]:
            assert (await ui.get(open_path)).status_code == 200, open_path
        signed = {"Authorization": f"Bearer {token}"}
        for path in ["/", "/rows", "/analytics"]:
            assert (await ui.get(path, headers=signed)).status_code == 200, path
        assert (await ui.get("/incidents/ns/name", headers=signed)).status_code == 404


async def test_the_sign_in_form_keeps_the_token_in_a_strict_httponly_cookie(
    watch: IncidentWatch, api: client.ApiClient
) -> None:
    token = new_token()
    async with ui_client(watch, api, ui_tokens=f"old,{token}") as ui:
        refused = await ui.post("/login", content=f"token=not-{token}", headers=FORM)
        assert refused.status_code == 401 and "not valid" in refused.text
        assert "set-cookie" not in refused.headers
        signed_in = await ui.post("/login", content=f"token={token}", headers=FORM)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"incident_ui_token={token};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert (await ui.get("/")).status_code == 200  # the client keeps the cookie
        huge = await ui.post("/login", content="token=" + "x" * 10_000, headers=FORM)
        assert huge.status_code == 413
        signed_out = await ui.post("/logout")
        assert signed_out.status_code == 303
        assert (await ui.get("/")).status_code == 401


async def test_behind_a_proxy_its_header_names_the_reader_and_tokens_do_not_count(
    watch: IncidentWatch, api: client.ApiClient
) -> None:
    token = new_token()
    async with ui_client(
        watch, api, ui_tokens=token, ui_auth_proxy_header="X-Forwarded-User"
    ) as ui:
        assert (await ui.get("/", headers={"Authorization": f"Bearer {token}"})).status_code == 401
        assert (await ui.get("/", headers={"X-Forwarded-User": " "})).status_code == 401
        page = await ui.get("/", headers={"X-Forwarded-User": "alice@example.com"})
        assert page.status_code == 200 and "alice@example.com" in page.text
        assert "Sign out" not in page.text  # the proxy signs people out
        assert (await ui.get("/login")).status_code == 303  # no token form behind a proxy


async def test_every_answer_carries_a_strict_same_origin_policy(
    watch: IncidentWatch, api: client.ApiClient
) -> None:
    async with ui_client(watch, api, ui_auth_disabled=True) as ui:
        for path in [*PAGES[:2], *PAGES[3:], "/login", "/static/ui.js", "/healthz"]:
            answer = await ui.get(path)
            assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert answer.headers["X-Frame-Options"] == "DENY"
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY


def test_without_a_way_to_sign_in_the_ui_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ["UI_TOKENS", "UI_TOKENS_FILE", "UI_AUTH_PROXY_HEADER", "UI_AUTH_DISABLED"]:
        monkeypatch.delenv(name, raising=False)
    assert main(["ui", "--port", "1"]) == 2
    assert "refusing to start" in capsys.readouterr().err


# --- hostile text ----------------------------------------------------------------------


class Markup(html.parser.HTMLParser):
    """Every element and attribute of a page, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]


def markup(page: str) -> Markup:
    parsed = Markup()
    parsed.feed(page)
    return parsed


# Every element the templates make: an alarm's text adds none (no script,
# img, svg, iframe, style, textarea...).
OUR_TAGS = set(
    [
        "html",
        "head",
        "meta",
        "title",
        "link",
        "script",
        "body",
        "header",
        "nav",
        "span",
        "form",
        "button",
        "main",
        "h1",
        "h2",
        "h3",
        "p",
        "label",
        "select",
        "option",
        "input",
        "datalist",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "div",
        "section",
        "dl",
        "dt",
        "dd",
        "pre",
        "ol",
        "li",
        "time",
        "ul",
        "code",
        "strong",
        "meter",
        "footer",
        "a",
    ]
)


async def test_hostile_alarm_text_is_escaped_everywhere_it_is_shown(
    watch: IncidentWatch, api: client.ApiClient, namespace: str
) -> None:
    payload = " | ".join(XSS)
    created = create_incident(
        api, namespace, "hostile",
        spec={"title": XSS[0], "summary": payload, "service": {"name": XSS[2]},
              "alarm": {"name": XSS[1], "reason": payload, "dimensions": {"d": XSS[3]}},
              "labels": {"team": XSS[4]}},
        status={"phase": "Escalated", "firstSeen": at(1, datetime.now(UTC)), "message": payload,
                "assessment": {"decision": "ESCALATE", "action": "notify_team",
                               "message": XSS[6], "confidence": 0.5, "rationale": payload,
                               "assessor": "gemini", "model": XSS[5],
                               "evidence": {"gatheredAt": at(1, datetime.now(UTC)),
                                            "elapsedMs": 12, "budgetMs": 10000,
                                            "items": [{"collector": "logs", "status": "ok",
                                                       "summary": payload[:512]}]}},
                "notifications": {"jira": {"key": XSS[7][:40], "url": XSS[8]},
                                  "slack": {"channel": XSS[0], "ts": XSS[1]},
                                  "pagerduty": {"dedupKey": XSS[3], "routingKey": XSS[4],
                                                "triggered": True}},
                "escalation": {"since": at(1, datetime.now(UTC)),
                               "steps": [{"number": 1, "step": 1, "at": at(0, datetime.now(UTC)),
                                          "slackUserGroup": XSS[2], "email": ["a@example.com"]}]},
                "conditions": [{"type": "Assessed", "status": "True", "reason": "Assessed",
                                "message": payload,
                                "lastTransitionTime": at(1, datetime.now(UTC))}]},
    )  # fmt: skip
    post_event(api, created, at(0, datetime.now(UTC)), "Hostile", "Warning", payload)
    timeline = LogTimeline()
    await timeline.record(
        [
            Entry(
                incident_id=f"{namespace}/hostile",
                ts=f"{at(0, datetime.now(UTC))}#1",
                kind=XSS[2],
                phase="Escalated",
                message=payload,
            )
        ]
    )
    async with ui_client(watch, api, timeline, ui_auth_disabled=True) as ui:
        await _until(lambda: watch.get(namespace, "hostile") is not None)
        pages = {
            path: (await ui.get(path)).text
            for path in ["/?q=svg", "/rows", f"/incidents/{namespace}/hostile", "/analytics"]
        }
    for path, page in pages.items():
        found = markup(page)
        assert set(found.tags) <= OUR_TAGS, (path, set(found.tags) - OUR_TAGS)
        # Ours alone, from /static/ui.js (the rows for the script have none).
        assert found.tags.count("script") == (path != "/rows"), path
        assert not [name for name, _ in found.attributes if name.startswith("on")], path
        links = [value for name, value in found.attributes if name in ("href", "src", "action")]
        assert all(link.startswith(("/", "https://slack.com/")) for link in links), (path, links)
    detail = pages[f"/incidents/{namespace}/hostile"]
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in detail
    assert "javascript:window.pwned=1" in detail  # shown as text, never as a link
    assert "{{7*7}} {% if 1 %}jinja{% endif %}" in detail  # data, never a template
    # The evidence, the PagerDuty alert and the escalation steps are shown, as text.
    assert "<h3>Evidence</h3>" in detail and "Escalation steps taken" in detail
    assert "PagerDuty: alert &#39;&gt;&lt;iframe" in detail


async def _until(condition: Any, timeout: float = 10) -> None:
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_an_incident_gone_from_the_cluster_still_shows_its_timeline(
    watch: IncidentWatch, api: client.ApiClient, namespace: str
) -> None:
    timeline = LogTimeline()
    await timeline.record(
        [
            Entry(
                incident_id=f"{namespace}/retired",
                ts="2026-11-20T10:00:00Z#1",
                kind="resolved",
                message="it was resolved",
            )
        ]
    )
    async with ui_client(watch, api, timeline, ui_auth_disabled=True) as ui:
        page = await ui.get(f"/incidents/{namespace}/retired")
    assert page.status_code == 404
    assert "retention" in page.text and "it was resolved" in page.text


# --- the pure parts ---------------------------------------------------------------------


def incident(name: str = "a", **status: Any) -> Incident:
    return Incident.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "ops",
                "creationTimestamp": status.pop("created", "2026-11-30T10:00:00Z"),
            },
            "spec": {
                "source": "generic",
                "fingerprint": name,
                "title": f"{name} title",
                "severity": status.pop("severity", "high"),
                "service": {"name": status.pop("service", "checkout")},
                "alarm": {"name": status.pop("alarm", name)},
            },
            "status": status,
        }
    )


def test_durations_read_as_people_say_them() -> None:
    assert [times.duration(s) for s in (None, 0, 45, 192, 7500, 356_400)] == [
        "", "0s", "45s", "3m 12s", "2h 5m", "4d 3h"
    ]  # fmt: skip


def test_filters_ignore_what_is_not_a_choice() -> None:
    filters = listing.Filters.from_query(
        {"phase": "Pwned", "severity": "<b>", "since": "forever", "service": "  pay ", "q": "x"}
    )
    assert filters == listing.Filters(service="pay", text="x")


def test_time_to_acknowledge_and_to_resolve() -> None:
    acked = incident(
        phase="Resolved", firstSeen="2026-11-30T10:00:00Z",
        acknowledgement={"by": "U1", "at": "2026-11-30T10:04:00Z", "via": "slack"},
        conditions=[{"type": "Resolved", "status": "True", "reason": "AlarmOk", "message": "",
                     "lastTransitionTime": "2026-11-30T10:30:00Z"}],
    )  # fmt: skip
    assert times.time_to_acknowledge(acked) == 240
    assert times.time_to_resolve(acked) == 1800
    open_one = incident(phase="Escalated", firstSeen="2026-11-30T11:00:00Z")
    assert times.time_to_resolve(open_one) is None
    assert times.open_for(open_one, NOW) == 3600


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [analytics.percentile(values, p) for p in (50, 90, 99)] == [50, 90, 99]
    assert analytics.percentile([], 50) is None
    assert analytics.percentile([7.0], 99) == 7.0


def test_analytics_over_a_period() -> None:
    day = "2026-11-30T10:00:00Z"
    incidents = [
        incident("auto", phase="Resolved", firstSeen=day,
                 remediation={"action": "restart_service", "target": "r/c/s",
                              "result": "Succeeded"},
                 assessment={"decision": "SAFE", "action": "restart_service", "message": "m",
                             "confidence": 1, "assessor": "gemini", "latencyMs": 900,
                             "promptTokens": 100, "outputTokens": 10}),
        incident("approved", phase="Resolved", firstSeen=day, service="search",
                 approval={"required": True, "state": "Approved", "via": "slack", "by": "U1"},
                 remediation={"action": "restart_service", "target": "r/c/s",
                              "result": "Succeeded"}),
        incident("up", phase="Escalated", firstSeen=day, occurrences=7, alarm="noisy"),
        incident("quiet", phase="Ignored", firstSeen=day),
        incident("muted", phase="Resolved", firstSeen=day, message=QUIET_RESOLUTION),
        incident("hushed", phase="Silenced", firstSeen=day),
        incident("old", phase="Escalated", firstSeen="2026-11-01T10:00:00Z",
                 created="2026-11-01T10:00:00Z"),
    ]  # fmt: skip
    report = analytics.analyse(incidents, days=7, now=NOW)
    assert report.total == 6  # "old" is outside the period
    shares = {o.label: (o.count, round(o.share, 3)) for o in report.outcomes}
    assert shares["auto-remediated"] == (1, 0.167)
    assert shares["remediated after approval"] == (1, 0.167)
    assert shares["escalated"] == (1, 0.167) and shares["ignored"] == (1, 0.167)
    # Muted while silenced, or recovered while silenced: silenced.
    assert shares["silenced"] == (2, 0.333)
    assert report.per_day[-1] == (NOW.date(), {"checkout": 5, "search": 1})
    assert len(report.per_day) == 8 and report.busiest_day == 6
    assert report.noisiest[0] == analytics.Alarm("noisy", 1, 7)
    (gemini,) = report.ai
    assert (gemini.assessments, gemini.prompt_tokens, gemini.output_tokens) == (1, 100, 10)
    assert gemini.latency_ms.percentiles[50] == 900


def test_per_day_shows_the_busiest_services_and_counts_the_rest_together() -> None:
    day = "2026-11-30T10:00:00Z"
    incidents = [
        incident(f"i{n}-{k}", firstSeen=day, service=f"svc-{n:02d}")
        for n in range(analytics.MAX_SERVICES + 3)
        for k in range(1 + (n < analytics.MAX_SERVICES))  # the first ones twice
    ]
    report = analytics.analyse(incidents, days=1, now=NOW)
    assert report.services[-1] == analytics.OTHERS
    assert len(report.services) == analytics.MAX_SERVICES + 1
    assert report.per_day[-1][1][analytics.OTHERS] == 3
    assert sum(report.per_day[-1][1].values()) == len(incidents)


def test_the_story_tells_timeline_and_events_once_in_order() -> None:
    entries = [
        Entry(incident_id="ops/a", ts="2026-11-30T10:00:00Z#2", kind="assessment",
              message="SAFE restart"),
        Entry(incident_id="ops/a", ts="2026-11-30T09:59:00Z#1", kind="received", message="in"),
        # An earlier Incident of the same name: before this one's first alarm.
        Entry(incident_id="ops/a", ts="2026-11-20T10:00:00Z#1", kind="received", message="old"),
    ]  # fmt: skip
    events = [
        {"reason": "Assessed", "message": "SAFE restart", "type": "Normal",
         "lastTimestamp": "2026-11-30T10:00:01Z"},
        {"reason": "RestartFailed", "message": "ECS said no", "type": "Warning", "count": 3,
         "eventTime": "2026-11-30T10:05:00.000000Z"},
    ]  # fmt: skip
    told = story.tell(
        entries=entries, events=events, created=datetime(2026, 11, 30, 9, 59, tzinfo=UTC)
    )
    assert [(c.what, c.sources) for c in told] == [
        ("received", ["timeline"]),
        ("assessment", ["timeline", "event"]),
        ("RestartFailed", ["event"]),
    ]
    assert told[2].warning and told[2].count == 3


def test_a_public_url_makes_links_point_at_the_ui() -> None:
    linked = Settings(ui_public_url="https://incidents.example.com/")
    assert (
        linked.incident_link_template
        == "https://incidents.example.com/incidents/{namespace}/{name}"
    )
    chosen = Settings(ui_public_url="https://ui", incident_link_template="https://x/{name}")
    assert chosen.incident_link_template == "https://x/{name}"
    assert Settings().incident_link_template is None
