"""POST /slack/actions against the real API server: signed clicks decide,
everything else is refused (401) or politely answered, and changes nothing."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from kubernetes import client
from slack_sdk.signature import Clock, SignatureVerifier

from aws_fixtures import Aws
from builders import incident as incident_body
from fakes.slack import FakeSlack
from incident_operator.config import Settings
from incident_operator.devstack.controlplane import ControlPlane
from incident_operator.models import GROUP, VERSION
from incident_operator.slack.actions import (
    response_url_allowed,
    response_url_origins,
    slack_actions_router,
)
from incident_operator.timeline import Entry
from incident_operator.timeline.dynamodb import DynamoTimeline
from slack_signing import click, form_body, sign
from webhook_support import new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

MESSAGE_TS = "1795000000.000100"


@pytest.fixture
def secret() -> str:
    return secrets.token_hex(16)


@pytest.fixture
async def http(
    api: client.ApiClient, namespace: str, slack: FakeSlack, secret: str
) -> AsyncIterator[httpx.AsyncClient]:
    async with webhook(
        api, namespace, token=new_token(), slack_signing_secret=secret,
        slack_bot_token=slack.token, slack_api_url=slack.api_url,
    ) as http:  # fmt: skip
        # Slack sends no bearer token: the route must not want one.
        del http.headers["Authorization"]
        yield http


def put_incident(
    api: client.ApiClient, namespace: str, *, phase: str = "AwaitingApproval", **approval: Any
) -> str:
    objects = client.CustomObjectsApi(api)
    body = incident_body(f"checkout-{secrets.token_hex(6)}")
    name = body["metadata"]["name"]
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", body)
    status = {
        "phase": phase,
        "occurrences": 1,
        "approval": {"required": True, "state": "Pending",
                     "deadline": "2099-01-01T00:00:00Z", **approval},
        "notifications": {"slack": {"channel": "C0INCIDENTS", "ts": MESSAGE_TS}},
    }  # fmt: skip
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "incidents", name, {"status": status}
    )
    return name


def read(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "incidents", name
        )
    )


async def press(
    http: httpx.AsyncClient, secret: str, slack: FakeSlack, action: str, value: str, *,
    user: str = "U0ALICE", message_ts: str | None = MESSAGE_TS,
) -> tuple[httpx.Response, str]:  # fmt: skip
    url = slack.response_url()
    body = click(action, value, user=user, response_url=url, message_ts=message_ts)
    answer = await http.post("/slack/actions", content=body, headers=sign(secret, body))
    return answer, url


async def test_a_signed_approval_is_recorded_and_confirmed(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(
        api,
        namespace,
        action="scale_service",
        parameters={"desiredCount": 4},
        target="us-east-1/demo/checkout",
    )
    started = time.monotonic()
    answer, url = await press(http, secret, slack, "incident_approve", f"{namespace}/{name}")
    assert answer.status_code == 200 and time.monotonic() - started < 3
    approval = read(api, namespace, name)["status"]["approval"]
    assert approval["state"] == "Approved"
    assert (approval["by"], approval["via"]) == ("U0ALICE", "slack")
    assert approval["at"] and approval["deadline"] == "2099-01-01T00:00:00Z"
    [said] = slack.said(url)
    # What was approved, parameters and all, so nobody approves blind.
    assert said.startswith(
        "You approved scale_service (desiredCount 4) on us-east-1/demo/checkout "
        f"for {namespace}/{name}"
    )
    assert slack.responses[url.rsplit("/", 1)[-1]][0]["response_type"] == "ephemeral"


async def test_a_signed_rejection_is_recorded(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace)
    answer, url = await press(http, secret, slack, "incident_reject", f"{namespace}/{name}")
    assert answer.status_code == 200
    assert read(api, namespace, name)["status"]["approval"]["state"] == "Rejected"
    assert slack.said(url)[0].startswith("You rejected")


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda secret, body: sign(secrets.token_hex(16), body), id="forged"),
        pytest.param(
            lambda secret, body: {"Content-Type": "application/x-www-form-urlencoded"},
            id="unsigned",
        ),
        pytest.param(
            lambda secret, body: sign(secret, body, timestamp=int(time.time()) - 301),
            id="replayed",
        ),
        pytest.param(lambda secret, body: sign(secret, body + b"&x=1"), id="tampered"),
        pytest.param(
            lambda secret, body: {**sign(secret, body), "X-Slack-Request-Timestamp": "soon"},
            id="garbled-timestamp",
        ),
    ],
)
async def test_unverified_requests_are_refused_and_change_nothing(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str,
    slack: FakeSlack, forge: Any,
) -> None:  # fmt: skip
    name = put_incident(api, namespace)
    before = read(api, namespace, name)["metadata"]["resourceVersion"]
    url = slack.response_url()
    body = click("incident_approve", f"{namespace}/{name}", user="U0MALLORY", response_url=url)
    answer = await http.post("/slack/actions", content=body, headers=forge(secret, body))
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert read(api, namespace, name)["metadata"]["resourceVersion"] == before
    assert slack.said(url) == []


def test_slacks_documented_example_validates() -> None:
    # The walk-through in Slack's "Verifying requests from Slack" (api.slack.com/
    # authentication/verifying-requests-from-slack): its secret, timestamp, body
    # and signature, a slash command.
    body = (
        "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        "&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        "&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        "commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }

    class Then(Clock):
        def now(self) -> float:
            return 1531420618 + 60

    verifier = SignatureVerifier("8f742231b10e8888abcd99yyyzzz85a5", clock=Then())
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body.replace("roadrunner", "coyote"), headers)
    # And through the route: past the signature (not 401); a slash command is no click.
    settings = Settings(slack_signing_secret="8f742231b10e8888abcd99yyyzzz85a5")
    app = FastAPI()
    app.include_router(
        slack_actions_router(settings=settings, api=client.ApiClient(), clock=Then())
    )

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as http:
            return await http.post(
                "/slack/actions",
                content=body.encode(),
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            )

    answer = asyncio.run(post())
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_payload", "message": "the form has no payload field"}


async def test_a_double_click_is_answered_politely_and_changes_nothing(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace)
    await press(http, secret, slack, "incident_approve", f"{namespace}/{name}")
    decided = read(api, namespace, name)
    for action, user in [("incident_approve", "U0ALICE"), ("incident_reject", "U0BOB")]:
        answer, url = await press(http, secret, slack, action, f"{namespace}/{name}", user=user)
        assert answer.status_code == 200
        assert slack.said(url) == [
            f"Thanks, but {namespace}/{name} was already approved by <@U0ALICE> via slack."
        ]
    assert (
        read(api, namespace, name)["metadata"]["resourceVersion"]
        == (decided["metadata"]["resourceVersion"])
    )


async def test_racing_clicks_decide_once(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace)
    results = await asyncio.gather(
        *(
            press(http, secret, slack, action, f"{namespace}/{name}", user=user)
            for action, user in [("incident_approve", "U0ALICE"), ("incident_reject", "U0BOB")] * 3
        )
    )
    approval = read(api, namespace, name)["status"]["approval"]
    said = [text for _, url in results for text in slack.said(url)]
    assert sum(text.startswith("You ") for text in said) == 1, said
    winner = "approved" if approval["state"] == "Approved" else "rejected"
    assert sum(f"already {winner}" in text for text in said) == 5, said


async def test_someone_not_an_approver_is_refused_politely(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace, approvers=["U0ALICE"])
    before = read(api, namespace, name)["metadata"]["resourceVersion"]
    answer, url = await press(
        http, secret, slack, "incident_approve", f"{namespace}/{name}", user="U0MALLORY"
    )
    assert answer.status_code == 200
    assert slack.said(url) == [
        "Sorry, you are not one of the approvers for this incident; nothing changed."
    ]
    assert read(api, namespace, name)["metadata"]["resourceVersion"] == before


async def test_a_member_of_the_approver_group_may_decide(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    slack.usergroups["S0ONCALL"] = ["U0CAROL", "U0DAVE"]
    name = put_incident(api, namespace, approvers=["U0ALICE"], approverGroup="S0ONCALL")
    _, refused = await press(
        http, secret, slack, "incident_approve", f"{namespace}/{name}", user="U0MALLORY"
    )
    assert "not one of the approvers" in slack.said(refused)[0]
    await press(http, secret, slack, "incident_approve", f"{namespace}/{name}", user="U0DAVE")
    approval = read(api, namespace, name)["status"]["approval"]
    assert (approval["state"], approval["by"]) == ("Approved", "U0DAVE")
    [call] = [c for c in slack.calls if c.path == "/api/usergroups.users.list"][-1:]
    assert call.query["usergroup"] == "S0ONCALL"


async def test_clicks_after_the_incident_ended_change_nothing(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace, phase="Resolved")
    before = read(api, namespace, name)["metadata"]["resourceVersion"]
    _, url = await press(http, secret, slack, "incident_approve", f"{namespace}/{name}")
    assert slack.said(url) == [
        f"Incident {namespace}/{name} has ended (Resolved); there is nothing to decide."
    ]
    assert read(api, namespace, name)["metadata"]["resourceVersion"] == before


async def test_a_click_on_a_stale_message_changes_nothing(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace)
    _, url = await press(
        http, secret, slack, "incident_approve", f"{namespace}/{name}", message_ts="1.000001"
    )
    assert slack.said(url) == [
        f"This message is out of date; use the newest message for {namespace}/{name}."
    ]
    assert read(api, namespace, name)["status"]["approval"]["state"] == "Pending"


async def test_a_click_for_a_missing_incident_is_answered(
    namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    _, url = await press(http, secret, slack, "incident_approve", f"{namespace}/checkout-gone")
    assert slack.said(url) == [f"Incident {namespace}/checkout-gone no longer exists."]


async def test_view_timeline_shows_the_status_when_there_is_no_table(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace)
    _, url = await press(http, secret, slack, "incident_timeline", f"{namespace}/{name}")
    [said] = slack.said(url)
    assert said.startswith(f"*{namespace}/{name}* is *AwaitingApproval*")
    assert read(api, namespace, name)["status"]["approval"]["state"] == "Pending"


async def test_view_timeline_reads_the_table_when_there_is_one(
    api: client.ApiClient, namespace: str, secret: str, slack: FakeSlack, aws: Aws
) -> None:
    name = put_incident(api, namespace)
    timeline = DynamoTimeline(aws.timeline_table(), client=aws.client("dynamodb"))
    await timeline.record([
        Entry(incident_id=f"{namespace}/{name}", ts="2026-11-29T10:00:00+00:00#00#received",
              kind="received", message="high alarm for checkout"),
        Entry(incident_id=f"{namespace}/{name}", ts="2026-11-29T10:00:01+00:00#00#assessment",
              kind="assessment", message="rules decided SAFE restart_service"),
    ])  # fmt: skip
    app = FastAPI()
    settings = Settings(slack_signing_secret=secret, slack_api_url=slack.api_url)
    app.include_router(slack_actions_router(settings=settings, api=api, timeline=timeline))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as http:
        _, url = await press(http, secret, slack, "incident_timeline", f"{namespace}/{name}")
    [said] = slack.said(url)
    assert said.splitlines()[1:] == [
        "`2026-11-29 10:00:00` *received*: high alarm for checkout",
        "`2026-11-29 10:00:01` *assessment*: rules decided SAFE restart_service",
    ]


# --- where replies go: only to Slack (issue 12, item 10) ---------------------


async def test_a_click_whose_response_url_is_not_slacks_is_refused_and_not_fetched(
    api: client.ApiClient, namespace: str, secret: str, slack: FakeSlack
) -> None:
    # No SLACK_API_URL: the webhook knows Slack by its own hosts only, and
    # the fake Slack's loopback address is just an address on our network.
    name = put_incident(api, namespace)
    before = read(api, namespace, name)["metadata"]["resourceVersion"]
    async with webhook(api, namespace, token=new_token(), slack_signing_secret=secret) as http:
        answer, url = await press(http, secret, slack, "incident_approve", f"{namespace}/{name}")
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_payload",
        "message": "response_url is not an https URL on Slack's hosts; nothing changed",
    }
    assert read(api, namespace, name)["metadata"]["resourceVersion"] == before
    assert slack.said(url) == []  # nothing was posted there


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/respond/1",  # loopback, not the fake's port
        "http://169.254.169.254/latest/meta-data/",
        "http://hooks.slack.com/actions/T0/1/x",  # not https
        "https://hooks.slack.com:8443/actions/T0/1/x",
        "https://hooks.slack.com.evil.example/actions/T0/1/x",
        "https://evil.example#@hooks.slack.com/actions/T0/1/x",
        "https://user@hooks.slack.com/actions/T0/1/x",
        "https://slack.com/api/chat.postMessage",
        "file:///etc/passwd",
        "not a url",
    ],
)
async def test_only_slacks_hosts_and_the_api_url_origin_get_replies(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, url: str
) -> None:
    name = put_incident(api, namespace)
    before = read(api, namespace, name)["metadata"]["resourceVersion"]
    body = click("incident_approve", f"{namespace}/{name}", user="U0ALICE", response_url=url)
    answer = await http.post("/slack/actions", content=body, headers=sign(secret, body))
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_payload"
    assert read(api, namespace, name)["metadata"]["resourceVersion"] == before


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.slack.com/actions/T0TEAM/1337/abcDEF", True),
        ("https://HOOKS.SLACK.COM:443/actions/T0TEAM/1337/abcDEF", True),
        ("https://hooks.slack-gov.com/actions/T0TEAM/1337/abcDEF", True),
        ("http://hooks.slack.com/actions/T0TEAM/1337/abcDEF", False),
        ("https://hooks.slack.com:80/actions/T0TEAM/1337/abcDEF", False),
        ("https://proxy.example.com/respond/1", True),  # SLACK_API_URL's origin
        ("https://proxy.example.com:8443/respond/1", False),
        ("http://proxy.example.com/respond/1", False),
    ],
)
def test_response_url_origins(url: str, allowed: bool) -> None:
    origins = response_url_origins("https://proxy.example.com/api/")
    assert response_url_allowed(url, origins) is allowed
    assert response_url_allowed("https://proxy.example.com/x", response_url_origins(None)) is False


async def test_a_payload_nesting_too_deep_is_refused(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str
) -> None:
    # Before the bounded parse: RecursionError, a 500.
    body = form_body("[" * 5000 + "]" * 5000)
    answer = await http.post("/slack/actions", content=body, headers=sign(secret, body))
    assert answer.status_code == 400
    assert answer.json()["error"] == "json_too_deep"


async def test_the_route_wants_a_form(http: httpx.AsyncClient, secret: str) -> None:
    body = b'{"payload": {}}'
    headers = {**sign(secret, body), "Content-Type": "application/json"}
    answer = await http.post("/slack/actions", content=body, headers=headers)
    assert answer.status_code == 415


# --- the same decision from a terminal: `kubectl incident approve|reject` -----

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "kubectl-incident"


def kubectl_incident(control_plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = Path(control_plane.binaries.kubectl)
    # kubectl finds plugins on PATH; the plugin finds kubectl there too.
    bin_dir = Path(control_plane.kubeconfig).parent / "plugin-bin"
    bin_dir.mkdir(exist_ok=True)
    for source, link in [(kubectl, "kubectl"), (PLUGIN, "kubectl-incident")]:
        if not (bin_dir / link).exists():
            (bin_dir / link).symlink_to(source)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "KUBECONFIG": str(control_plane.kubeconfig), "USER": "fallback-user"}  # fmt: skip
    return subprocess.run(
        ["kubectl", "incident", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_kubectl_incident_approves_as_the_kubernetes_user(
    api: client.ApiClient, namespace: str, control_plane: ControlPlane
) -> None:
    name = put_incident(api, namespace)
    done = kubectl_incident(control_plane, "approve", name, "-n", namespace)
    assert done.returncode == 0, done.stderr
    approval = read(api, namespace, name)["status"]["approval"]
    assert (approval["state"], approval["via"]) == ("Approved", "kubectl")
    whoami = control_plane.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", check=False
    ).stdout.strip()
    assert approval["by"] == (whoami or "fallback-user")
    assert approval["at"] and approval["deadline"] == "2099-01-01T00:00:00Z"
    # Decided: a second decision is refused and changes nothing.
    again = kubectl_incident(control_plane, "reject", name, "-n", namespace)
    assert again.returncode == 1
    assert "is AwaitingApproval (approval Approved); nothing to decide" in again.stderr
    assert read(api, namespace, name)["status"]["approval"]["state"] == "Approved"


def test_kubectl_incident_rejects_with_a_given_name(
    api: client.ApiClient, namespace: str, control_plane: ControlPlane
) -> None:
    name = put_incident(api, namespace)
    done = kubectl_incident(
        control_plane, "reject", name, f"--namespace={namespace}", "--by", 'bob "the" builder'
    )
    assert done.returncode == 0, done.stderr
    approval = read(api, namespace, name)["status"]["approval"]
    assert (approval["state"], approval["by"]) == ("Rejected", 'bob "the" builder')


# --- acknowledgement: "I am on it" ---------------------------------------------


async def test_acknowledge_from_slack_records_who_took_it_once(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace, phase="Escalated")

    answer, url = await press(http, secret, slack, "incident_acknowledge", f"{namespace}/{name}")
    again, again_url = await press(
        http, secret, slack, "incident_acknowledge", f"{namespace}/{name}", user="U0BOB"
    )

    assert answer.status_code == again.status_code == 200
    ack = read(api, namespace, name)["status"]["acknowledgement"]
    assert (ack["by"], ack["via"]) == ("U0ALICE", "slack") and ack["at"]
    [said] = slack.said(url)
    assert said.startswith(f"You acknowledged {namespace}/{name}")
    [refused] = slack.said(again_url)
    assert refused.startswith(f"Thanks, but <@U0ALICE> via slack already acknowledged {namespace}/")
    assert read(api, namespace, name)["status"]["acknowledgement"]["by"] == "U0ALICE"


async def test_an_ended_incident_is_not_acknowledged(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace, phase="Resolved")
    _, url = await press(http, secret, slack, "incident_acknowledge", f"{namespace}/{name}")
    [said] = slack.said(url)
    assert "has ended (Resolved); there is nothing to acknowledge" in said
    assert "acknowledgement" not in read(api, namespace, name)["status"]


def test_kubectl_incident_acknowledges(
    api: client.ApiClient, namespace: str, control_plane: ControlPlane
) -> None:
    name = put_incident(api, namespace, phase="Escalated")
    done = kubectl_incident(control_plane, "ack", name, "-n", namespace, "--by", "carol")
    assert done.returncode == 0, done.stderr
    ack = read(api, namespace, name)["status"]["acknowledgement"]
    assert (ack["by"], ack["via"]) == ("carol", "kubectl") and ack["at"]
    again = kubectl_incident(control_plane, "ack", name, "-n", namespace, "--by", "dave")
    assert again.returncode == 1
    assert "already acknowledged by carol" in again.stderr
    assert read(api, namespace, name)["status"]["acknowledgement"]["by"] == "carol"


# --- silences: the "Silence 1h" button, `kubectl incident silence` --------------


def silences(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "silences"
    )
    return list(listed["items"])


def hours_between(spec: dict[str, Any]) -> float:
    starts, ends = (
        datetime.fromisoformat(spec[key].replace("Z", "+00:00")) for key in ("startsAt", "endsAt")
    )
    return (ends - starts).total_seconds() / 3600


async def test_silence_1h_creates_a_silence_of_the_service_and_alarm(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace, phase="Escalated", approvers=["U0ALICE"])
    answer, url = await press(http, secret, slack, "incident_silence", f"{namespace}/{name}")
    assert answer.status_code == 200
    [silence] = silences(api, namespace)
    spec = silence["spec"]
    assert spec["matchers"] == [
        {"name": "service", "op": "=", "value": "checkout"},
        {"name": "alarm", "op": "=", "value": "checkout-cpu-high"},
    ]
    assert hours_between(spec) == 1
    assert spec["createdBy"] == "slack:U0ALICE"
    assert f"{namespace}/{name}" in spec["comment"]
    assert silence["metadata"]["name"].startswith(name[:40])
    [said] = slack.said(url)
    assert said.startswith("You silenced checkout-cpu-high of checkout until ")
    # The Incident itself goes on as it was.
    assert read(api, namespace, name)["status"]["phase"] == "Escalated"


async def test_only_approvers_may_silence_and_forgeries_change_nothing(
    api: client.ApiClient, namespace: str, http: httpx.AsyncClient, secret: str, slack: FakeSlack
) -> None:
    name = put_incident(api, namespace, phase="Escalated", approvers=["U0ALICE"])
    _, url = await press(
        http, secret, slack, "incident_silence", f"{namespace}/{name}", user="U0MALLORY"
    )
    assert slack.said(url) == [
        "Sorry, you are not one of the approvers who may silence it; nothing changed."
    ]
    body = click("incident_silence", f"{namespace}/{name}", user="U0ALICE",
                 response_url=slack.response_url(), message_ts=MESSAGE_TS)  # fmt: skip
    forged = await http.post(
        "/slack/actions", content=body, headers=sign(secrets.token_hex(16), body)
    )
    assert forged.status_code == 401
    assert silences(api, namespace) == []


def test_kubectl_incident_silence_creates_a_silence(
    api: client.ApiClient, namespace: str, control_plane: ControlPlane
) -> None:
    done = kubectl_incident(
        control_plane, "silence", "-n", namespace, "--service", "payments",
        "--alarm", "payments-*.high", "--severity=critical", "--for", "2h",
        "--comment", 'deploying "v2"', "--by", "carol",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout
    [silence] = silences(api, namespace)
    spec = silence["spec"]
    assert spec["matchers"] == [
        {"name": "service", "op": "=", "value": "payments"},
        {"name": "alarm", "op": "=~", "value": r"payments-.*\.high"},
        {"name": "severity", "op": "=", "value": "critical"},
    ]
    assert hours_between(spec) == 2
    assert (spec["createdBy"], spec["comment"]) == ("carol", 'deploying "v2"')


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--for", "2h"], "say what to silence"),
        (["--service", "payments", "--for", "soon"], "--for takes a duration"),
    ],
)
def test_kubectl_incident_silence_refuses_what_it_cannot_make(
    api: client.ApiClient, namespace: str, control_plane: ControlPlane, args: list[str], said: str
) -> None:
    done = kubectl_incident(control_plane, "silence", "-n", namespace, *args)
    assert done.returncode == 2
    assert said in done.stderr
    assert silences(api, namespace) == []
