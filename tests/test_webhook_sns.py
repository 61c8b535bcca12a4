"""SNS through the webhook: signed alarms count, anything forged changes nothing.

The signing certificate is generated at test time and handed to the webhook
the way an operator of the service would: SNS_TRUSTED_CERTS_DIR. Every other
SNS URL (other certificates, SubscribeURLs) goes to a recording fetch that
stands in for SNS's hosts, so a test sees each fetch the webhook makes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.error
from email.message import Message as Headers
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from prometheus_client import CollectorRegistry

from incident_operator.config import Settings
from incident_operator.ingest.app import create_app
from incident_operator.ingest.recorder import AlarmRecorder
from sns_signing import CERT_URL, Signer, make_signer
from webhook_support import incidents, occurrences

pytestmark = pytest.mark.usefixtures("crds_installed")

PAYLOADS = Path(__file__).resolve().parent / "payloads"
TOPIC = "arn:aws:sns:eu-west-1:111122223333:alarms"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


class SnsHosts:
    """What SNS's hosts answer, recording every URL asked for: a 200 for a
    SubscribeURL, a 404 for any certificate (the real ones are local files)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        if "Action=ConfirmSubscription" in url:
            return b"<ConfirmSubscriptionResponse/>"
        raise urllib.error.HTTPError(url, 404, "Not Found", Headers(), None)


@pytest.fixture
def sns_hosts() -> SnsHosts:
    return SnsHosts()


def sns_app(
    api: client.ApiClient,
    namespace: str,
    certs: Path,
    *,
    hosts: SnsHosts | None = None,
    **settings: Any,
) -> httpx.AsyncClient:
    # No bearer token is configured for the client: SNS does not send one.
    settings.setdefault("sns_topic_arns", TOPIC)
    config = Settings(
        incident_namespace=namespace,
        ingest_tokens="unused-by-sns",
        sns_trusted_certs_dir=certs,
        **settings,
    )
    app = create_app(
        settings=config,
        recorder=AlarmRecorder(api=api, namespace=namespace),
        api=api,
        registry=CollectorRegistry(),
        sns_fetch=hosts if hosts is not None else SnsHosts(),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhook")


@pytest.fixture
def certs(tmp_path: Path, signer: Signer) -> Path:
    (tmp_path / CERT_URL.rsplit("/", 1)[-1]).write_bytes(signer.pem)
    return tmp_path


def sns_time(when: dt.datetime | None = None) -> str:
    """A Timestamp as SNS writes it: UTC, milliseconds, Z."""
    when = when if when is not None else dt.datetime.now(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def notification(message_id: str = "b1f4a0e2-0000-4000-8000-000000000001") -> dict[str, Any]:
    """The sample alarm notification, from our topic, sent just now."""
    body: dict[str, Any] = json.loads((PAYLOADS / "sns-notification-alarm.json").read_text())
    body["MessageId"] = message_id
    body["TopicArn"] = TOPIC
    body["Timestamp"] = sns_time()
    return body


def confirmation(topic: str = TOPIC) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((PAYLOADS / "sns-subscription-confirmation.json").read_text())
    body["TopicArn"] = topic
    body["Timestamp"] = sns_time()
    return body


def post(http: httpx.AsyncClient, body: dict[str, Any]) -> Any:
    # SNS posts JSON as text/plain.
    return http.post(
        "/alerts/sns",
        content=json.dumps(body),
        headers={"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "x"},
    )


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_notification_creates_an_incident_once(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer, version: str
) -> None:
    signed = signer.sign(notification(), version=version)
    async with sns_app(api, namespace, certs) as http:
        first = await post(http, signed)
        again = await post(http, signed)  # SNS redelivers on timeouts
    assert first.status_code == 200, first.text
    assert first.json()["incidents"][0]["result"] == "created"
    assert again.json()["incidents"][0]["result"] == "redelivery"
    [incident] = incidents(api, namespace)
    assert incident["spec"]["source"] == "sns"
    assert occurrences(incident) == 1


async def test_forged_notifications_get_403_and_change_nothing(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer
) -> None:
    tampered = signer.sign(notification())
    tampered["Message"] = tampered["Message"].replace("ALARM", "OK")
    elsewhere = signer.sign(notification(), url="https://evil.example.com/cert.pem")
    other_key = make_signer().sign(notification())
    unsigned = {**signer.sign(notification()), "Signature": ""}
    async with sns_app(api, namespace, certs) as http:
        answers = [await post(http, body) for body in (tampered, elsewhere, other_key, unsigned)]
    assert [a.status_code for a in answers] == [403, 403, 403, 403]
    assert all(a.json()["error"] == "forbidden" for a in answers)
    assert incidents(api, namespace) == []


async def test_topics_outside_the_allow_list_are_refused(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer
) -> None:
    signed = signer.sign(notification())
    async with sns_app(api, namespace, certs, sns_topic_arns="arn:aws:sns:*:*:prod-*") as http:
        response = await post(http, signed)
    assert response.status_code == 403 and "SNS_TOPIC_ARNS" in response.json()["message"]
    assert incidents(api, namespace) == []


async def test_subscription_to_a_foreign_url_is_not_confirmed(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer, sns_hosts: SnsHosts
) -> None:
    body = confirmation()
    body["SubscribeURL"] = "https://evil.example.com/confirm?token=x"
    async with sns_app(api, namespace, certs, hosts=sns_hosts) as http:
        response = await post(http, signer.sign(body))
    assert response.status_code == 403
    assert "SubscribeURL" in response.json()["message"]
    assert sns_hosts.urls == []


# --- default-deny: topics, freshness (issue 12, item 4) -----------------------


async def test_with_no_topic_configured_every_sns_message_is_refused(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer, sns_hosts: SnsHosts
) -> None:
    # A validly signed notification and confirmation, and SNS_TOPIC_ARNS unset.
    messages = [signer.sign(notification()), signer.sign(confirmation())]
    async with sns_app(api, namespace, certs, hosts=sns_hosts, sns_topic_arns="") as http:
        answers = [await post(http, body) for body in messages]
    assert [a.status_code for a in answers] == [403, 403]
    for answer in answers:
        assert answer.json()["error"] == "forbidden"
        assert "set SNS_TOPIC_ARNS" in answer.json()["message"]
    assert sns_hosts.urls == []  # not confirmed, nothing fetched
    assert incidents(api, namespace) == []


async def test_only_a_subscription_to_an_accepted_topic_is_confirmed(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer, sns_hosts: SnsHosts
) -> None:
    ours = signer.sign(confirmation(TOPIC))
    theirs = signer.sign(confirmation("arn:aws:sns:eu-west-1:999999999999:their-alarms"))
    async with sns_app(api, namespace, certs, hosts=sns_hosts) as http:
        confirmed = await post(http, ours)
        refused = await post(http, theirs)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["confirmed"] is True
    assert refused.status_code == 403
    assert "is not in SNS_TOPIC_ARNS" in refused.json()["message"]
    assert sns_hosts.urls == [ours["SubscribeURL"]]


@pytest.mark.parametrize(
    ("sent", "accepted"),
    [
        (dt.timedelta(minutes=-50), True),  # SNS retries for up to an hour
        (dt.timedelta(minutes=-70), False),
        (dt.timedelta(days=-2600), False),  # "one dated 2019"
        (dt.timedelta(minutes=2), True),  # clocks disagree a little
        (dt.timedelta(hours=1), False),
    ],
    ids=["50-min-old", "70-min-old", "from-2019", "2-min-ahead", "1-h-ahead"],
)
async def test_a_signed_message_outside_the_time_window_is_refused(
    api: client.ApiClient,
    namespace: str,
    certs: Path,
    signer: Signer,
    sent: dt.timedelta,
    accepted: bool,
) -> None:
    body = notification()
    body["Timestamp"] = sns_time(dt.datetime.now(dt.UTC) + sent)
    async with sns_app(api, namespace, certs) as http:
        response = await post(http, signer.sign(body))
    if accepted:
        assert response.status_code == 200, response.text
        assert len(incidents(api, namespace)) == 1
    else:
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "forbidden"
        assert (
            "Timestamp" in response.json()["message"]
            or "SNS_MAX_AGE_SECONDS" in (response.json()["message"])
        )
        assert incidents(api, namespace) == []


async def test_the_time_window_is_configurable(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer
) -> None:
    body = notification()
    body["Timestamp"] = sns_time(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))
    async with sns_app(api, namespace, certs, sns_max_age_seconds=60) as http:
        response = await post(http, signer.sign(body))
    assert response.status_code == 403
    assert "SNS_MAX_AGE_SECONDS" in response.json()["message"]


# --- bounded JSON (issue 12, item 3) ---------------------------------------------


async def test_a_deeply_nested_body_is_a_400_not_a_500(
    api: client.ApiClient, namespace: str, certs: Path
) -> None:
    async with sns_app(api, namespace, certs, sns_topic_arns="") as http:
        response = await http.post(
            "/alerts/sns",
            content="[" * 1000 + "]" * 1000,
            headers={"Content-Type": "text/plain"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "json_too_deep"
    assert "64" in response.json()["message"]


async def test_a_signed_message_nesting_too_deep_is_refused_not_retried(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer
) -> None:
    # A 5xx would make SNS deliver it again and again; a 4xx ends it.
    body = notification()
    body["Message"] = '{"AlarmName": ' + "[" * 5000 + "]" * 5000 + "}"
    async with sns_app(api, namespace, certs) as http:
        response = await post(http, signer.sign(body))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_alarm"
    assert "deeper than 64" in response.json()["message"]
    assert incidents(api, namespace) == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)
MESSAGES = st.one_of(
    st.text(max_size=200),
    JSON.map(json.dumps),
    st.integers(60, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.fixed_dictionaries(
        {"AlarmName": st.text(max_size=30), "NewStateValue": st.text(max_size=10)},
        optional={"AlarmArn": st.text(max_size=60), "Trigger": JSON, "AlarmTags": JSON},
    ).map(json.dumps),
)


def test_a_signed_message_of_any_content_is_never_a_5xx(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer
) -> None:
    # Signed by SNS, so past every check but the Message itself: whatever
    # it holds is an Incident or a 4xx (which SNS does not retry), never a 5xx.
    http = sns_app(api, namespace, certs)

    @given(message=MESSAGES)
    @settings(
        max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(message: str) -> None:
        body = {**notification(f"m-{abs(hash(message))}"), "Message": message}
        response = asyncio.run(post(http, signer.sign(body)))
        assert response.status_code < 500, response.text
        assert response.status_code in (200, 422), response.text

    run()


# --- certificate fetches (issue 12, item 11) --------------------------------------


async def test_forged_certificate_urls_cost_at_most_the_fetch_budget(
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer, sns_hosts: SnsHosts
) -> None:
    # 20 messages, each naming another certificate on an SNS host: before,
    # each one made the webhook fetch it.
    forged = [
        signer.sign(
            notification(f"b1f4a0e2-0000-4000-8000-{index:012d}"),
            url=f"https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-f{index}.pem",
        )
        for index in range(20)
    ]
    elsewhere = signer.sign(
        {**notification(), "TopicArn": "arn:aws:sns:eu-west-1:999999999999:their-alarms"},
        url="https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-theirs.pem",
    )
    async with sns_app(
        api, namespace, certs, hosts=sns_hosts, sns_cert_fetches_per_minute=5
    ) as http:
        first = [await post(http, body) for body in forged]
        again = [await post(http, body) for body in forged]
        other_topic = await post(http, elsewhere)
    # Five fetches; each finds no certificate (403). The rest are not
    # fetched: 503, which SNS would retry, with when to.
    assert len(sns_hosts.urls) == 5
    assert [a.status_code for a in first] == [403] * 5 + [503] * 15
    assert all(a.json()["error"] == "unavailable" for a in first[5:])
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for a in first[5:])
    # Sent again: the five failures are remembered, nothing is fetched.
    assert [a.status_code for a in again] == [403] * 5 + [503] * 15
    assert len(sns_hosts.urls) == 5
    # A topic we do not take costs no fetch at all.
    assert other_topic.status_code == 403 and len(sns_hosts.urls) == 5
    assert incidents(api, namespace) == []
