"""SNS HTTP(S) messages: CloudWatch alarms out of Notifications, and signature checks.

The signing key and certificate are made at test time: no key is committed, and
no test reaches AWS. The verifier gets the certificate through its `trusted`
mapping or an injected `fetch`, under an SNS URL, so the URL checks still apply.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from incident_operator.ingest.alarm import InvalidAlarm, ReceivedAlarm
from incident_operator.ingest.sources import cloudwatch, sns
from sns_signing import CERT_URL, Signer, make_signer

Load = Callable[[str], dict[str, Any]]

ALARM_ARN = "arn:aws:cloudwatch:eu-west-1:111122223333:alarm:checkout-memory-high"


class Visits:
    """A fetch that records the URLs it is asked for."""

    def __init__(self, answer: bytes = b"<ConfirmSubscriptionResponse/>") -> None:
        self.urls: list[str] = []
        self.answer = answer

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.answer


def message(body: dict[str, Any]) -> sns.SnsMessage:
    return sns.SnsMessage.model_validate(body)


def parse(body: dict[str, Any]) -> list[ReceivedAlarm]:
    alarms = sns.source.parse(message(body)).alarms
    for alarm in alarms:
        alarm.incident_spec()  # every value fits the CRD's bounds
    return alarms


def with_message(body: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    return {**body, "Message": json.dumps(inner)}


# --- Alarms out of Notifications -------------------------------------------------


def test_alarm_notification(payload: Load) -> None:
    [alarm] = parse(payload("sns-notification-alarm.json"))

    assert alarm.source == "sns"
    assert alarm.fingerprint == ALARM_ARN
    assert alarm.alarm.arn == ALARM_ARN
    assert alarm.delivery_id == "0f6c3a2e-4b1d-5c8e-9a7f-2d4e6f8a0b1c"
    assert alarm.title == "checkout-memory-high"
    assert alarm.service.name == "checkout"
    assert alarm.service.cluster == "prod"
    # Region is the code from the ARN, not the display name "EU (Ireland)".
    assert alarm.service.region == "eu-west-1"
    assert alarm.alarm.state == "ALARM"
    assert alarm.alarm.metric == "MemoryUtilization"
    assert alarm.alarm.dimensions == {"ServiceName": "checkout", "ClusterName": "prod"}
    changed = dt.datetime(2026, 3, 2, 9, 20, 11, 532000, tzinfo=dt.UTC)
    assert alarm.observed_at == changed
    assert alarm.alarm.starts_at == changed
    assert alarm.severity == "high"  # "severity=high" in the description
    assert alarm.labels == {
        "namespace": "AWS/ECS",
        "metric": "MemoryUtilization",
        "account": "111122223333",
        "region": "eu-west-1",
    }
    assert alarm.alarm.raw is not None
    assert json.loads(alarm.alarm.raw)["MessageId"] == alarm.delivery_id


def test_same_fingerprint_as_the_eventbridge_delivery_of_the_alarm(payload: Load) -> None:
    event = payload("cloudwatch-single-metric.json")
    event_model = cloudwatch.CloudWatchEvent.model_validate(event)
    [via_eventbridge] = cloudwatch.source.parse(event_model).alarms
    body = payload("sns-notification-alarm.json")
    inner = json.loads(body["Message"])
    inner["AlarmArn"] = event["resources"][0]
    [via_sns] = parse(with_message(body, inner))

    assert via_sns.fingerprint == via_eventbridge.fingerprint


def test_metric_math_notification(payload: Load) -> None:
    [alarm] = parse(payload("sns-notification-metric-math.json"))

    assert alarm.service.name == "payments"
    assert alarm.service.cluster == "prod"
    assert alarm.alarm.metric == "Running tasks (% of desired)"
    assert alarm.alarm.dimensions == {"ServiceName": "payments", "ClusterName": "prod"}
    assert alarm.labels["namespace"] == "ECS/ContainerInsights"


def test_recovery_notification(payload: Load) -> None:
    body = payload("sns-notification-alarm.json")
    inner = json.loads(body["Message"])
    inner.update(NewStateValue="OK", OldStateValue="ALARM")
    [alarm] = parse(with_message(body, inner))

    assert alarm.alarm.state == "OK"
    assert alarm.fingerprint == ALARM_ARN
    assert alarm.alarm.starts_at is None  # the notification does not say when ALARM began


def test_composite_alarm_notification_names_its_service_by_tag(payload: Load) -> None:
    body = payload("sns-notification-alarm.json")
    inner = json.loads(body["Message"])
    del inner["Trigger"]
    inner["AlarmRule"] = "ALARM(checkout-cpu-high) OR ALARM(checkout-memory-high)"
    inner["AlarmTags"] = {"service": "checkout", "cluster": "prod"}
    [alarm] = parse(with_message(body, inner))

    assert alarm.service.name == "checkout"
    assert alarm.alarm.metric is None


def test_eventbridge_event_delivered_through_sns(payload: Load) -> None:
    event = payload("cloudwatch-single-metric.json")
    body = with_message(payload("sns-notification-alarm.json"), event)
    [alarm] = parse(body)

    assert alarm.source == "sns"
    assert alarm.fingerprint == event["resources"][0]
    assert alarm.delivery_id == body["MessageId"]
    assert alarm.service.name == "checkout"
    assert alarm.alarm.metric == "CPUUtilization"


@pytest.mark.parametrize(
    "name", ["sns-subscription-confirmation.json", "sns-unsubscribe-confirmation.json"]
)
def test_confirmations_carry_no_alarm(payload: Load, name: str) -> None:
    assert parse(payload(name)) == []


@pytest.mark.parametrize(
    ("inner", "complaint"),
    [
        ("not json at all", "not JSON"),
        ('["a", "list"]', "not a JSON object"),
        ('{"hello": "world"}', "not a CloudWatch alarm notification"),
        ('{"AlarmName": "x", "NewStateValue": "ALARM"}', "AlarmArn"),
        ('{"AlarmName": "x", "AlarmArn": "arn", "NewStateValue": "ON FIRE"}', "NewStateValue"),
        ('{"detail-type": "CloudWatch Alarm State Change"}', "not a valid CloudWatch alarm"),
    ],
)
def test_messages_that_are_not_alarms_are_refused(
    payload: Load, inner: str, complaint: str
) -> None:
    body = {**payload("sns-notification-alarm.json"), "Message": inner}
    with pytest.raises(InvalidAlarm, match=complaint):
        parse(body)


def test_an_alarm_naming_no_service_is_kept_and_never_acted_on(payload: Load) -> None:
    body = payload("sns-notification-alarm.json")
    inner = json.loads(body["Message"])
    inner["Trigger"]["Dimensions"] = [{"name": "InstanceId", "value": "i-0123456789abcdef0"}]
    [alarm] = parse(with_message(body, inner))
    service = alarm.service
    assert (service.name, service.platform) == (inner["Trigger"]["Namespace"], "none")


def test_an_envelope_missing_what_is_needed_is_invalid(payload: Load) -> None:
    body = payload("sns-notification-alarm.json")
    del body["MessageId"]
    with pytest.raises(ValidationError, match="MessageId"):
        message(body)
    with pytest.raises(ValidationError, match="Type"):
        message({**payload("sns-notification-alarm.json"), "Type": "Gossip"})


# --- Signatures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


@pytest.fixture
def verifier(signer: Signer) -> sns.SnsVerifier:
    def no_fetch(url: str) -> bytes:
        raise AssertionError(f"fetched {url}")

    return sns.SnsVerifier(trusted={CERT_URL: signer.pem}, fetch=no_fetch)


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize(
    "name",
    [
        "sns-notification-alarm.json",
        "sns-subscription-confirmation.json",
        "sns-unsubscribe-confirmation.json",
    ],
)
def test_signed_messages_verify(
    payload: Load, signer: Signer, verifier: sns.SnsVerifier, version: str, name: str
) -> None:
    verifier.verify(message(signer.sign(payload(name), version=version)))


def test_a_notification_without_subject_verifies(
    payload: Load, signer: Signer, verifier: sns.SnsVerifier
) -> None:
    body = payload("sns-notification-alarm.json")
    del body["Subject"]
    verifier.verify(message(signer.sign(body, version="2")))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Message", '{"AlarmName": "forged"}'),
        ("Subject", "OK: all is well"),
        ("Timestamp", "2026-03-02T09:20:12.601Z"),
        ("TopicArn", "arn:aws:sns:eu-west-1:999999999999:elsewhere"),
        ("MessageId", "00000000-0000-0000-0000-000000000000"),
    ],
)
@pytest.mark.parametrize("version", ["1", "2"])
def test_a_tampered_message_is_refused(
    payload: Load,
    signer: Signer,
    verifier: sns.SnsVerifier,
    field: str,
    value: str,
    version: str,
) -> None:
    signed = signer.sign(payload("sns-notification-alarm.json"), version=version)
    with pytest.raises(sns.SignatureError, match="does not match"):
        verifier.verify(message({**signed, field: value}))


def test_a_tampered_subscribe_url_is_refused(
    payload: Load, signer: Signer, verifier: sns.SnsVerifier
) -> None:
    signed = signer.sign(payload("sns-subscription-confirmation.json"))
    forged = {**signed, "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Other"}
    with pytest.raises(sns.SignatureError, match="does not match"):
        verifier.verify(message(forged))


def test_a_signature_by_another_key_is_refused(payload: Load, verifier: sns.SnsVerifier) -> None:
    impostor = make_signer()
    signed = impostor.sign(payload("sns-notification-alarm.json"), version="2")
    with pytest.raises(sns.SignatureError, match="does not match"):
        verifier.verify(message(signed))


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/x.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example.com/x.pem",
        "https://sns.us-east-1.amazonaws.com@evil.example.com/x.pem",
        "https://s3.amazonaws.com/sns.us-east-1.amazonaws.com/x.pem",
        "",
    ],
)
def test_a_certificate_from_outside_sns_is_refused_even_if_trusted(
    payload: Load, signer: Signer, url: str
) -> None:
    fetch = Visits(signer.pem)
    # Trusting the URL does not make it an SNS URL.
    verifier = sns.SnsVerifier(trusted={url: signer.pem}, fetch=fetch)
    signed = signer.sign(payload("sns-notification-alarm.json"), url=url)
    with pytest.raises(sns.SignatureError, match="SigningCertURL"):
        verifier.verify(message(signed))
    assert fetch.urls == []


@pytest.mark.parametrize("version", ["3", "0", "", None])
def test_an_unknown_signature_version_is_refused(
    payload: Load, signer: Signer, verifier: sns.SnsVerifier, version: str | None
) -> None:
    signed = {**signer.sign(payload("sns-notification-alarm.json")), "SignatureVersion": version}
    with pytest.raises(sns.SignatureError, match="SignatureVersion"):
        verifier.verify(message(signed))


@pytest.mark.parametrize("signature", [None, "", "not base64!"])
def test_a_missing_or_garbled_signature_is_refused(
    payload: Load, signer: Signer, verifier: sns.SnsVerifier, signature: str | None
) -> None:
    signed = {**signer.sign(payload("sns-notification-alarm.json")), "Signature": signature}
    with pytest.raises(sns.SignatureError):
        verifier.verify(message(signed))


def test_a_confirmation_without_its_token_is_refused(
    payload: Load, signer: Signer, verifier: sns.SnsVerifier
) -> None:
    signed = signer.sign(payload("sns-subscription-confirmation.json"))
    del signed["Token"]
    with pytest.raises(sns.SignatureError, match="Token"):
        verifier.verify(message(signed))


def test_certificates_are_fetched_once_per_url(payload: Load, signer: Signer) -> None:
    fetch = Visits(signer.pem)
    verifier = sns.SnsVerifier(fetch=fetch)
    verifier.verify(message(signer.sign(payload("sns-notification-alarm.json"))))
    verifier.verify(message(signer.sign(payload("sns-subscription-confirmation.json"))))
    assert fetch.urls == [CERT_URL]


def test_a_certificate_that_cannot_be_fetched_is_unavailability(
    payload: Load, signer: Signer
) -> None:
    def fetch(url: str) -> bytes:
        raise TimeoutError("timed out")

    verifier = sns.SnsVerifier(fetch=fetch)
    with pytest.raises(sns.SnsUnavailable):
        verifier.verify(message(signer.sign(payload("sns-notification-alarm.json"))))


def test_a_fetched_document_that_is_not_a_certificate_is_refused(
    payload: Load, signer: Signer
) -> None:
    verifier = sns.SnsVerifier(fetch=lambda url: b"<html>not found</html>")
    with pytest.raises(sns.SignatureError, match="PEM"):
        verifier.verify(message(signer.sign(payload("sns-notification-alarm.json"))))


def test_string_to_sign_follows_the_documented_order(payload: Load) -> None:
    body = {
        "Type": "Notification",
        "MessageId": "m-1",
        "TopicArn": "arn:aws:sns:eu-west-1:111122223333:t",
        "Subject": "s",
        "Message": "hello\nworld",
        "Timestamp": "2026-03-02T09:20:11.601Z",
    }
    assert sns.string_to_sign(message(body)) == (
        b"Message\nhello\nworld\nMessageId\nm-1\nSubject\ns\n"
        b"Timestamp\n2026-03-02T09:20:11.601Z\nTopicArn\narn:aws:sns:eu-west-1:111122223333:t\n"
        b"Type\nNotification\n"
    )
    del body["Subject"]
    assert b"Subject" not in sns.string_to_sign(message(body))

    confirmation = {**body, "Type": "SubscriptionConfirmation", "Token": "tok"}
    confirmation["SubscribeURL"] = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
    confirmation["Subject"] = "not signed in a confirmation"
    assert sns.string_to_sign(message(confirmation)) == (
        b"Message\nhello\nworld\nMessageId\nm-1\n"
        b"SubscribeURL\nhttps://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription\n"
        b"Timestamp\n2026-03-02T09:20:11.601Z\nToken\ntok\n"
        b"TopicArn\narn:aws:sns:eu-west-1:111122223333:t\nType\nSubscriptionConfirmation\n"
    )


# --- Whom to call -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("https://SNS.EU-WEST-1.AMAZONAWS.COM/x.pem", True),
        ("https://sns.us-east-1.amazonaws.com:443/x.pem", True),
        ("http://sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://evil.example.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.example.com/x.pem", False),
        ("https://user@sns.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
        ("https://sns.us-east-1.amazonaws.com:port/x.pem", False),
        ("https://sqs.us-east-1.amazonaws.com/x.pem", False),
        ("https://sns.amazonaws.com/x.pem", False),
        ("https://sns.us_east_1.amazonaws.com/x.pem", False),
        ("file:///etc/passwd", False),
        ("not a url", False),
        ("", False),
    ],
)
def test_is_sns_url(url: str, allowed: bool) -> None:
    assert sns.is_sns_url(url) is allowed


def test_confirm_subscription_visits_the_subscribe_url(payload: Load) -> None:
    body = payload("sns-subscription-confirmation.json")
    fetch = Visits()
    sns.confirm_subscription(message(body), fetch)
    assert fetch.urls == [body["SubscribeURL"]]


@pytest.mark.parametrize(
    "url", ["https://evil.example.com/confirm", "http://sns.eu-west-1.amazonaws.com/?Action=x"]
)
def test_confirm_subscription_never_visits_other_hosts(payload: Load, url: str) -> None:
    fetch = Visits()
    body = {**payload("sns-subscription-confirmation.json"), "SubscribeURL": url}
    with pytest.raises(sns.SignatureError, match="SubscribeURL"):
        sns.confirm_subscription(message(body), fetch)
    assert fetch.urls == []


def test_only_a_subscription_confirmation_is_confirmed(payload: Load) -> None:
    fetch = Visits()
    for name in ("sns-unsubscribe-confirmation.json", "sns-notification-alarm.json"):
        with pytest.raises(InvalidAlarm):
            sns.confirm_subscription(message(payload(name)), fetch)
    assert fetch.urls == []


def test_a_confirmation_that_cannot_reach_sns_is_unavailability(payload: Load) -> None:
    def fetch(url: str) -> bytes:
        raise ConnectionRefusedError(url)

    with pytest.raises(sns.SnsUnavailable):
        sns.confirm_subscription(message(payload("sns-subscription-confirmation.json")), fetch)


def test_https_get_refuses_plain_http() -> None:
    with pytest.raises(ValueError, match="https"):
        sns.https_get("http://sns.us-east-1.amazonaws.com/x.pem")
