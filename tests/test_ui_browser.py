"""The web UI in a real browser: Debian's chromium, driven by Playwright.

One UI process serves a namespace holding the four Incidents `make demo`
ends with (their timeline in moto's DynamoDB, their Events in the API
server); each test signs in through the login form in a fresh browser
context. Screenshots of the three pages land in .artifacts/ui/.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from kubernetes import client
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from aws_fixtures import REGION, MotoServer
from incident_operator.models import GROUP, VERSION
from incident_operator.timeline import Entry
from incident_operator.timeline.dynamodb import DynamoTimeline, create_table
from ui_support import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    XSS,
    Ui,
    at,
    create_incident,
    create_story,
    demo_stories,
    now,
    post_event,
    record,
    serve_ui,
    timeline_entries,
)
from webhook_support import new_token

TABLE = "ui-timeline"
DEMO = ["checkout-cpu-high", "payments-error-rate", "search-latency", "orders-storm"]


@pytest.fixture(scope="module")
def shown_namespace(api: client.ApiClient, crds_installed: None) -> str:
    name = f"ui-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def ui(
    api: client.ApiClient,
    kubeconfig: Path,
    moto_server: MotoServer,
    shown_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Ui]:
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=moto_server.url,
        region_name=REGION,
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
    )
    create_table(dynamodb, TABLE)
    timeline = DynamoTimeline(TABLE, client=dynamodb)
    for story in demo_stories(now()):
        create_story(api, shown_namespace, story)
        record(timeline, timeline_entries(shown_namespace, story))
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    yield from serve_ui(
        kubeconfig,
        shown_namespace,
        token=new_token(),
        log=log,
        TIMELINE_TABLE=TABLE,
        AWS_ENDPOINT_URL=moto_server.url,
        AWS_ACCESS_KEY_ID=moto_server.access_key,
        AWS_SECRET_ACCESS_KEY=moto_server.secret_key,
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
    )


# Module scope, not session: while Playwright's sync API is running, its
# event loop is this thread's running loop, and the asyncio tests of the
# modules after this one could not start theirs.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Debian's chromium, never a downloaded one.
    assert Path(CHROMIUM).exists(), (
        "no chromium: make cluster-deps (tests/cluster/install-packages.sh)"
    )
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nUI screenshots in {ARTIFACTS}")
    return ARTIFACTS


def sign_in(page: Page, ui: Ui) -> None:
    page.goto(f"{ui.url}/login")
    page.fill("#token", ui.token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Incidents")


@pytest.fixture
def page(browser: Browser, ui: Ui) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    elsewhere: list[str] = []
    # Everything the page loads comes from the UI itself.
    opened.on("request", lambda r: r.url.startswith(ui.url) or elsewhere.append(r.url))
    opened.on("dialog", lambda d: pytest.fail(f"a dialog opened: {d.message}"))
    sign_in(opened, ui)
    try:
        yield opened
    finally:
        context.close()
    assert elsewhere == [], f"requests left the UI's origin: {elsewhere}"


def shown_names(page: Page) -> list[str]:
    return page.locator("#incident-rows tr[data-name]").evaluate_all(
        "rows => rows.map(r => r.dataset.name)"
    )


def row(page: Page, name: str) -> Any:
    return page.locator(f'#incident-rows tr[data-name="{name}"]')


# --- the list ------------------------------------------------------------------


def test_the_list_shows_the_demo_incidents_with_kubectls_columns(
    page: Page, ui: Ui, artifacts: Path
) -> None:
    assert set(DEMO) <= set(shown_names(page))
    # Newest first: the orders storm opened last.
    assert shown_names(page)[0] == "orders-storm"
    checkout = row(page, "checkout-cpu-high")
    expect(checkout.locator("td").nth(1)).to_have_text("checkout")
    expect(checkout.locator("td").nth(2)).to_have_text("high")
    expect(checkout.locator("td").nth(3)).to_have_text("Resolved")
    expect(checkout.locator("td").nth(4)).to_have_text("SAFE")
    expect(checkout.locator("td").nth(5)).to_have_text("restart_service")
    expect(checkout.locator("td").nth(6)).to_have_text("RestartSucceeded")
    expect(row(page, "orders-storm").locator("td").nth(8)).to_have_text("12")
    expect(row(page, "payments-error-rate").locator("td").nth(7)).to_have_text("U024BE7LH")
    # Durations: payments was acknowledged 9 minutes after its first alarm;
    # checkout resolved 5 minutes after.
    expect(row(page, "payments-error-rate").locator("td").nth(11)).to_have_text(re.compile("^9m"))
    expect(checkout.locator("td").nth(12)).to_have_text(re.compile("^5m"))
    expect(page.locator("#live")).to_be_visible()
    page.screenshot(path=str(artifacts / "list.png"), full_page=True)


def test_filters_narrow_the_list(page: Page, ui: Ui) -> None:
    page.select_option("select[name=phase]", "Escalated")
    page.click("form#filters button[type=submit]")
    expect(page.locator("#counts")).to_contain_text("2 of")
    assert set(shown_names(page)) == {"payments-error-rate", "orders-storm"}
    assert "phase=Escalated" in page.url

    page.select_option("select[name=phase]", "")
    page.fill("input[name=q]", "5xx")  # its title
    page.click("form#filters button[type=submit]")
    assert shown_names(page) == ["payments-error-rate"]

    page.goto(f"{ui.url}/?severity=high&service=ord&since=1h")
    # Its severity is its most severe alert's.
    assert shown_names(page) == ["orders-storm"]
    page.goto(f"{ui.url}/?service=nothing-like-this")
    expect(page.locator("#incident-rows")).to_contain_text("No Incident matches.")


def test_the_list_works_without_javascript(browser: Browser, ui: Ui) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, ui)
        assert set(DEMO) <= set(shown_names(page))
        expect(page.locator("#live")).to_be_hidden()
        page.select_option("select[name=severity]", "critical")
        page.click("form#filters button[type=submit]")
        assert shown_names(page) == ["payments-error-rate"]
    finally:
        context.close()


# --- an Incident's page ------------------------------------------------------------


def test_an_incident_page_tells_its_story_in_order(page: Page, ui: Ui, artifacts: Path) -> None:
    page.click('a[href$="/checkout-cpu-high"]')
    expect(page.locator("h1")).to_contain_text("checkout-cpu-high")
    chapters = page.locator("#story li")
    # The timeline and the Events, one story: an Event saying what a timeline
    # entry says is told once, marked as both.
    whats = chapters.locator(".what").all_inner_texts()
    assert whats == ["received", "assessment", "action_started", "action_succeeded", "resolved"]
    stamps = chapters.locator("time").all_inner_texts()
    assert stamps == sorted(stamps)
    expect(chapters.nth(1).locator(".sources")).to_have_text("timeline + event")
    expect(page.locator("#assessment")).to_contain_text("Rule 'restart on CPU' matched")
    expect(page.locator("#remediation")).to_contain_text("Succeeded")
    expect(page.locator("#remediation")).to_contain_text("ecs-svc/1234567890")
    expect(page.locator("#conditions")).to_contain_text("RestartSucceeded")
    page.screenshot(path=str(artifacts / "incident.png"), full_page=True)


def test_an_escalated_incident_shows_cost_acknowledgement_and_links(
    page: Page, ui: Ui, shown_namespace: str
) -> None:
    page.goto(f"{ui.url}/incidents/{shown_namespace}/payments-error-rate")
    assessment = page.locator("#assessment")
    expect(assessment).to_contain_text("Errors started two minutes after deployment 42")
    expect(assessment).to_contain_text("1840 ms")
    expect(assessment).to_contain_text("1532")
    expect(assessment).to_contain_text("gemini-2.5-flash")
    expect(page.locator("#approval")).to_contain_text("Acknowledged by U024BE7LH via slack")
    jira = page.locator("#notifications a", has_text="SCRUM-42")
    expect(jira).to_have_attribute("href", "http://jira.example.test/browse/SCRUM-42")
    expect(page.locator("#notifications")).to_contain_text("C0INCIDENTS")
    expect(page.locator("#story .warning")).to_contain_text("escalated to a human")


# --- analytics -----------------------------------------------------------------------


def test_analytics_over_the_demo(page: Page, ui: Ui, artifacts: Path) -> None:
    page.click("nav >> text=Analytics")
    expect(page.locator("h1")).to_have_text("Analytics")
    outcomes = page.locator("#outcomes")
    for label, count, share in [
        ("auto-remediated", "1", "25%"),
        ("escalated", "2", "50%"),
        ("recovered on its own", "1", "25%"),
        ("ignored", "0", "0%"),
    ]:
        cells = outcomes.locator("tr", has=page.locator(f'td:text-is("{label}")')).locator("td")
        expect(cells.nth(1)).to_have_text(count)
        expect(cells.nth(2)).to_have_text(share)
    response = page.locator("#response")
    # One acknowledged (payments, 9 minutes), two resolved (5 and 8 minutes).
    expect(response.locator("tr", has_text="MTTA")).to_contain_text("9m 0s")
    expect(response.locator("tr", has_text="MTTR")).to_contain_text("8m 0s")
    ai = page.locator("#ai tr", has_text="gemini")
    expect(ai).to_contain_text("4512")  # prompt tokens of the two Gemini assessments
    expect(page.locator("#noisiest tbody tr").first).to_contain_text("orders pod")
    expect(page.locator("#per-day th", has_text="payments")).to_be_visible()
    page.screenshot(path=str(artifacts / "analytics.png"), full_page=True)
    page.select_option("select[name=days]", "1")
    page.click("form.filters button[type=submit]")
    assert "days=1" in page.url


# --- live updates ------------------------------------------------------------------------


def test_a_new_alarm_and_a_phase_change_appear_without_reload(
    page: Page, ui: Ui, api: client.ApiClient, shown_namespace: str
) -> None:
    namespace = shown_namespace
    expect(page.locator("#live")).to_be_visible()
    page.evaluate("window.sameDocument = true")
    name = f"inventory-{uuid.uuid4().hex[:6]}"
    create_incident(
        api, namespace, name,
        spec={"title": "inventory disk full", "service": {"name": "inventory"}},
        status={"phase": "Triggered", "occurrences": 1, "firstSeen": at(0, now())},
    )  # fmt: skip
    expect(row(page, name)).to_be_visible(timeout=10_000)
    expect(row(page, name).locator("td").nth(3)).to_have_text("Triggered")
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "incidents", name, {"status": {"phase": "Escalated"}}
    )
    expect(row(page, name).locator("td").nth(3)).to_have_text("Escalated", timeout=10_000)
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"


# --- security --------------------------------------------------------------------------------


def test_without_signing_in_everything_is_401(browser: Browser, ui: Ui) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        answer = page.goto(f"{ui.url}/")
        assert answer is not None and answer.status == 401
        expect(page.locator("h1")).to_have_text("Sign in")
        page.fill("#token", "not-" + ui.token)
        page.click("button[type=submit]")
        expect(page.locator(".error")).to_have_text("That token is not valid.")
        for path in ["/rows", "/stream", "/analytics", "/incidents/x/checkout-cpu-high"]:
            assert page.request.get(f"{ui.url}{path}").status == 401, path
        page.fill("#token", ui.token)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Incidents")
        cookie = next(c for c in context.cookies() if c["name"] == "incident_ui_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # The token is nowhere in the page the script could read.
        assert ui.token not in page.content()
    finally:
        context.close()


def test_hostile_alarm_text_is_shown_as_text_and_never_runs(
    page: Page,
    ui: Ui,
    api: client.ApiClient,
    moto_server: MotoServer,
    shown_namespace: str,
    artifacts: Path,
) -> None:
    namespace = shown_namespace
    payload = " | ".join(XSS)
    name = f"xss-{uuid.uuid4().hex[:6]}"
    created = create_incident(
        api, namespace, name,
        spec={
            "title": XSS[0], "summary": payload,
            "service": {"name": XSS[2][:60]},
            "alarm": {"name": XSS[1], "reason": payload, "dimensions": {"x": XSS[3]}},
            "labels": {"team": XSS[4]},
        },
        status={
            "phase": "Escalated", "occurrences": 1, "firstSeen": at(1, now()),
            "message": payload,
            "alerts": [{
                "fingerprint": "a", "title": XSS[5], "severity": "high", "state": "ALARM",
                "firstSeen": at(1, now()), "lastSeen": at(1, now()),
            }],
            "assessment": {
                "decision": "ESCALATE", "action": "notify_team", "message": XSS[6],
                "confidence": 0.5, "rationale": payload, "assessor": "gemini",
            },
            "notifications": {"jira": {"key": XSS[7][:40], "url": XSS[8]}},
        },
    )  # fmt: skip
    post_event(api, created, at(0, now()), "Escalated", "Warning", payload)
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=moto_server.url, region_name=REGION,
        aws_access_key_id=moto_server.access_key,
        aws_secret_access_key=moto_server.secret_key,
    )  # fmt: skip
    record(
        DynamoTimeline(TABLE, client=dynamodb),
        [
            Entry(
                incident_id=f"{namespace}/{name}",
                ts=f"{at(1, now())}#x",
                kind=XSS[0],
                message=payload,
            )
        ],
    )
    for path in [f"/?q={name}", f"/incidents/{namespace}/{name}", "/analytics"]:
        page.goto(f"{ui.url}{path}")
        page.wait_for_load_state("load")
        time.sleep(0.3)  # an onerror or onload handler would have run by now
        assert page.evaluate("typeof window.pwned") == "undefined", path
        injected = "main script, main img, main svg, main iframe, main style"
        assert page.evaluate(f"document.querySelectorAll('{injected}').length") == 0, path
        assert page.locator("body").is_visible(), path  # no injected style hid it
    # The service name, in the analytics table (text_content: headers are upper-cased by CSS).
    assert XSS[2][:60] in (page.locator("#per-day thead").text_content() or "")
    page.goto(f"{ui.url}/incidents/{namespace}/{name}")
    text = page.locator("main").inner_text()
    for attack in XSS:
        assert attack in text, attack
    # A javascript: address is never a link.
    assert page.locator("#notifications a").count() == 0
    page.screenshot(path=str(artifacts / "hostile.png"), full_page=True)
