"""SNS through the webhook: signed alarms count, anything forged changes nothing.

The signing certificate is generated at test time and handed to the webhook
the way an operator of the service would: SNS_TRUSTED_CERTS_DIR.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
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


def sns_app(
    api: client.ApiClient, namespace: str, certs: Path, **settings: Any
) -> httpx.AsyncClient:
    # No bearer token is configured for the client: SNS does not send one.
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
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://webhook")


@pytest.fixture
def certs(tmp_path: Path, signer: Signer) -> Path:
    (tmp_path / CERT_URL.rsplit("/", 1)[-1]).write_bytes(signer.pem)
    return tmp_path


def notification(message_id: str = "b1f4a0e2-0000-4000-8000-000000000001") -> dict[str, Any]:
    body: dict[str, Any] = json.loads((PAYLOADS / "sns-notification-alarm.json").read_text())
    body["MessageId"] = message_id
    body["TopicArn"] = TOPIC
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
    api: client.ApiClient, namespace: str, certs: Path, signer: Signer
) -> None:
    body = json.loads((PAYLOADS / "sns-subscription-confirmation.json").read_text())
    body["SubscribeURL"] = "https://evil.example.com/confirm?token=x"
    async with sns_app(api, namespace, certs) as http:
        response = await post(http, signer.sign(body))
    assert response.status_code == 403
    assert "SubscribeURL" in response.json()["message"]
