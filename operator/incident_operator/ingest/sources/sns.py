"""CloudWatch alarms delivered by an SNS HTTP(S) subscription: `POST /alerts/sns`.

SNS posts three kinds of messages, told apart by `Type`:

- `SubscriptionConfirmation`: visit its `SubscribeURL` to start receiving
  (`confirm_subscription`); it carries no alarm.
- `Notification`: `Message` is a JSON string. From a CloudWatch alarm action it is
  the classic alarm notification (`AlarmName`, `NewStateValue`, `Trigger`, ...);
  from an EventBridge rule with an SNS target it is the EventBridge event itself,
  read as `cloudwatch.py` reads it.
- `UnsubscribeConfirmation`: carries no alarm either.

Every message is signed by SNS. `SnsVerifier` checks the signature;
`SnsVerification`, the source's verification, calls it before `parse` or
`confirm_subscription`. Note that SNS sends its JSON with
`Content-Type: text/plain`, so the body must be read as JSON whatever that header
says, and that raw message delivery must stay off (it drops the signed envelope).
A valid signature proves the message came from SNS, not from our topic: any AWS
account can subscribe this endpoint to its own topic, so the app also checks
`TopicArn` against the topics it expects (and refuses every topic when none is
configured), and `check_fresh` refuses a message whose signed `Timestamp` is older
than SNS could still be retrying it: a validly signed message cannot be replayed
later.

Fetching certificates is the one thing an unauthenticated sender can make us do.
`SnsVerifier` keeps every certificate it loads and every failure for a while, and
starts at most a set number of new fetches a minute; past that a message needing
another certificate is answered "unavailable" (the app's 503), which SNS retries
and which costs nothing.

The order of the checks, each answered before the next one runs: the topic
(403 for every topic not in SNS_TOPIC_ARNS, all of them when it is empty)
and the age (403 past SNS_MAX_AGE_SECONDS), neither of which fetches
anything, then the signature (403; 503 when a certificate cannot be
fetched now), then the subscription confirmation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import logging
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.message import Message as HeaderMessage
from typing import IO, Any, Literal, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from pydantic import BaseModel, Field, ValidationError

from ...config import Settings
from ...models import AlarmState, Source
from ..alarm import AlarmSource, Delivery, Fetch, Handshake, InvalidAlarm, Posted, Refused
from ..jsonbody import JsonRefused, loads
from . import cloudwatch
from ._common import Payload, expect, raw_json
from .cloudwatch import CloudWatchAlarm, Query

M = TypeVar("M", bound=BaseModel)

log = logging.getLogger(__name__)

_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")

# The fields each kind of message signs, in the order they are signed.
_SIGNED_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SIGNED_CONFIRMATION = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,  # SHA1withRSA
    "2": hashes.SHA256,  # SHA256withRSA
}


# SNS gives up on a message after its delivery policy's retries, and "the total
# policy retry time for an HTTP/S endpoint cannot be greater than 3,600 seconds"
# (AWS, "Amazon SNS message delivery retries"; the default policy is 3 retries
# 20 s apart). Every redelivery carries the Timestamp of the publish, so an
# hour is the oldest a genuine delivery can be; anything older is a replay.
DEFAULT_MAX_AGE_SECONDS = 3600
# Allowed on top, both ways: the clocks of SNS and of this host disagree a
# little, and a delivery attempt may take up to SNS's 15 s timeout.
CLOCK_SKEW = timedelta(minutes=5)

# New certificate fetches a minute. SNS signs with one certificate per region
# and rotates it rarely: a handful covers every topic, and each is fetched
# once per process.
DEFAULT_FETCHES_PER_MINUTE = 10
# How long a failed fetch is answered from memory: briefly when SNS could not
# be reached (SNS retries 20 s later by default), long when the SNS host said
# there is no certificate there (a forged URL).
UNREACHABLE_TTL = 15.0
NO_CERTIFICATE_TTL = 3600.0
MAX_REMEMBERED_FAILURES = 1024
# How long a message waits for a certificate another message is fetching.
WAIT_FOR_FETCH_SECONDS = 10.0


class SignatureError(Exception):
    """The message is not provably from SNS (the app answers 403)."""


class StaleMessage(SignatureError):
    """The signed Timestamp is outside the window a genuine delivery can be in."""


class SnsUnavailable(Exception):
    """SNS could not be reached to fetch a certificate or confirm a subscription,
    or no new certificate may be fetched right now.

    Not the sender's fault: the app answers 503 with `retry_after` (seconds),
    and SNS delivers again later.
    """

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- The payloads ---------------------------------------------------------------


class SnsMessage(Payload):
    """The JSON document SNS posts to an HTTP(S) subscriber."""

    type: Literal["SubscriptionConfirmation", "Notification", "UnsubscribeConfirmation"] = Field(
        alias="Type"
    )
    message_id: str = Field(alias="MessageId", min_length=1)
    topic_arn: str = Field(alias="TopicArn")
    message: str = Field(alias="Message")
    # Kept as the text received, not parsed: it is part of what is signed.
    timestamp: str = Field(alias="Timestamp")
    subject: str | None = Field(None, alias="Subject")
    token: str | None = Field(None, alias="Token")
    subscribe_url: str | None = Field(None, alias="SubscribeURL")
    unsubscribe_url: str | None = Field(None, alias="UnsubscribeURL")
    # Optional here so that an unsigned message is refused as such (403), not as malformed.
    signature_version: str | None = Field(None, alias="SignatureVersion")
    signature: str | None = Field(None, alias="Signature")
    signing_cert_url: str | None = Field(None, alias="SigningCertURL")


class Dimension(Payload):
    name: str
    value: str


class TriggerMetric(Payload):
    namespace: str | None = Field(None, alias="Namespace")
    metric_name: str | None = Field(None, alias="MetricName")
    dimensions: list[Dimension] = Field(default_factory=list, alias="Dimensions")


class TriggerMetricStat(Payload):
    metric: TriggerMetric = Field(alias="Metric")


class TriggerQuery(Payload):
    id: str | None = Field(None, alias="Id")
    expression: str | None = Field(None, alias="Expression")
    label: str | None = Field(None, alias="Label")
    metric_stat: TriggerMetricStat | None = Field(None, alias="MetricStat")
    return_data: bool | None = Field(None, alias="ReturnData")


class Trigger(Payload):
    """What the alarm watches: one metric, or `Metrics` for a metric-math alarm."""

    metric_name: str | None = Field(None, alias="MetricName")
    namespace: str | None = Field(None, alias="Namespace")
    dimensions: list[Dimension] = Field(default_factory=list, alias="Dimensions")
    metrics: list[TriggerQuery] = Field(default_factory=list, alias="Metrics")


class AlarmNotification(Payload):
    """The classic CloudWatch alarm notification, the `Message` of an SNS Notification."""

    alarm_name: str = Field(alias="AlarmName", min_length=1)
    alarm_description: str | None = Field(None, alias="AlarmDescription")
    aws_account_id: str | None = Field(None, alias="AWSAccountId")
    new_state_value: AlarmState = Field(alias="NewStateValue")
    new_state_reason: str | None = Field(None, alias="NewStateReason")
    state_change_time: datetime | None = Field(None, alias="StateChangeTime")
    # A display name ("US East (N. Virginia)"); the region code is in the ARN.
    region: str | None = Field(None, alias="Region")
    alarm_arn: str = Field(alias="AlarmArn", min_length=1)
    old_state_value: str | None = Field(None, alias="OldStateValue")
    trigger: Trigger | None = Field(None, alias="Trigger")
    alarm_rule: str | None = Field(None, alias="AlarmRule")
    alarm_tags: Any = Field(None, alias="AlarmTags")


# --- Who may be trusted ---------------------------------------------------------------


def is_sns_url(url: str) -> bool:
    """Whether `url` is https on an SNS host: the only URLs this module ever fetches.

    Both the signing certificate and the SubscribeURL must pass, so that a forged
    message can neither bring its own certificate nor make us call someone else.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.username is None
        and port in (None, 443)
        and _SNS_HOST.fullmatch(parts.hostname or "") is not None
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead away from the SNS host that was checked.
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HeaderMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def https_get(url: str, *, timeout: float = 5.0, limit: int = 64 * 1024) -> bytes:
    """GET an https URL: no redirects, a short timeout, a capped body."""
    if urlsplit(url).scheme != "https":
        raise ValueError(f"not an https URL: {url!r}")
    opener = urllib.request.build_opener(_NoRedirects())
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read(limit + 1)
    if len(body) > limit:
        raise ValueError(f"{url!r} answered more than {limit} bytes")
    return body


def string_to_sign(message: SnsMessage) -> bytes:
    """The canonical text SNS signs: `name\\nvalue\\n` for each signed field, in order.

    A Notification signs Subject only when it has one; the confirmations sign
    their SubscribeURL and Token instead.
    """
    values = message.model_dump(by_alias=True)
    names = _SIGNED_NOTIFICATION if message.type == "Notification" else _SIGNED_CONFIRMATION
    lines: list[str] = []
    for name in names:
        value = values.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise SignatureError(f"{name} is missing from the {message.type} message")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


def _public_key(pem: str | bytes) -> RSAPublicKey:
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as error:
        raise SignatureError("the signing certificate is not a PEM certificate") from error
    key = certificate.public_key()
    if not isinstance(key, RSAPublicKey):
        raise SignatureError("the signing certificate has no RSA key")
    return key


class SnsVerifier:
    """Checks that an SNS message was signed by SNS (SignatureVersion 1 or 2).

    Certificates are fetched from the message's SigningCertURL, only from https
    SNS hosts, and kept: each URL is fetched once. A failed fetch is remembered
    too (briefly when SNS was unreachable, for an hour when there is no
    certificate at that URL), and at most `fetches_per_minute` new fetches
    start in any 60 seconds: past that, SnsUnavailable with the seconds until
    the next one may start. Messages that need a certificate being fetched
    wait for that fetch instead of starting their own.

    `trusted` maps certificate URLs to PEM certificates known in advance
    (tests, or a pinned deployment); `fetch` replaces the https GET; `clock`
    (monotonic seconds) the time. None of them loosens the URL check.
    """

    def __init__(
        self,
        *,
        trusted: Mapping[str, str | bytes] | None = None,
        fetch: Fetch = https_get,
        fetches_per_minute: int = DEFAULT_FETCHES_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._per_minute = fetches_per_minute
        self._keys: dict[str, RSAPublicKey] = {
            url: _public_key(pem) for url, pem in (trusted or {}).items()
        }
        # url -> (until, the failure to raise again); oldest first.
        self._failures: dict[str, tuple[float, SignatureError | SnsUnavailable]] = {}
        self._started: deque[float] = deque()  # when recent fetches started
        self._in_flight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()  # held for bookkeeping only, never while fetching

    def verify(self, message: SnsMessage) -> None:
        """Return if the message is signed by SNS; raise SignatureError if not."""
        algorithm = _HASHES.get(message.signature_version or "")
        if algorithm is None:
            raise SignatureError(
                f"unknown SignatureVersion {message.signature_version!r}: expected '1' or '2'"
            )
        url = message.signing_cert_url or ""
        if not is_sns_url(url):
            raise SignatureError(f"SigningCertURL {url!r} is not an https URL on an SNS host")
        try:
            signature = base64.b64decode(message.signature or "", validate=True)
        except (binascii.Error, ValueError) as error:
            raise SignatureError("Signature is not base64") from error
        if not signature:
            raise SignatureError("the message has no Signature")
        key = self._key(url)
        try:
            key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
        except InvalidSignature as error:
            raise SignatureError("the signature does not match the message") from error

    def _key(self, url: str) -> RSAPublicKey:
        key = self._keys.get(url)
        if key is not None:
            return key
        with self._lock:
            key = self._keys.get(url)
            if key is not None:
                return key
            self._raise_remembered(url)
            pending = self._in_flight.get(url)
            mine = pending is None
            if pending is None:
                self._start_fetch(url)
                pending = self._in_flight[url] = threading.Event()
        if not mine:
            pending.wait(WAIT_FOR_FETCH_SECONDS)
            with self._lock:
                key = self._keys.get(url)
                if key is not None:
                    return key
                self._raise_remembered(url)
            raise SnsUnavailable(f"the signing certificate {url} is still being fetched")
        try:
            key = self._load(url)
        except (SignatureError, SnsUnavailable) as failure:
            ttl = UNREACHABLE_TTL if isinstance(failure, SnsUnavailable) else NO_CERTIFICATE_TTL
            with self._lock:
                self._remember(url, failure, ttl)
            raise
        else:
            with self._lock:
                self._keys[url] = key
            return key
        finally:
            with self._lock:
                del self._in_flight[url]
            pending.set()

    def _load(self, url: str) -> RSAPublicKey:
        try:
            pem = self._fetch(url)
        except urllib.error.HTTPError as error:
            if 400 <= error.code < 500:
                # The SNS host says there is nothing there: a made-up URL.
                raise SignatureError(
                    f"no signing certificate at {url} (HTTP {error.code})"
                ) from error
            raise SnsUnavailable(f"cannot fetch the signing certificate {url}") from error
        except (OSError, ValueError) as error:
            raise SnsUnavailable(f"cannot fetch the signing certificate {url}") from error
        return _public_key(pem)

    # --- bookkeeping, under the lock ---------------------------------------

    def _raise_remembered(self, url: str) -> None:
        remembered = self._failures.get(url)
        if remembered is None:
            return
        until, failure = remembered
        now = self._clock()
        if now >= until:
            del self._failures[url]
        elif isinstance(failure, SnsUnavailable):
            raise SnsUnavailable(str(failure), retry_after=max(1, math.ceil(until - now)))
        else:
            raise SignatureError(str(failure))

    def _remember(self, url: str, failure: SignatureError | SnsUnavailable, ttl: float) -> None:
        now = self._clock()
        self._failures.pop(url, None)
        self._failures[url] = (now + ttl, failure)
        while len(self._failures) > MAX_REMEMBERED_FAILURES:
            del self._failures[next(iter(self._failures))]

    def _start_fetch(self, url: str) -> None:
        now = self._clock()
        while self._started and now - self._started[0] >= 60.0:
            self._started.popleft()
        if len(self._started) >= self._per_minute:
            wait = math.ceil(60.0 - (now - self._started[0]))
            raise SnsUnavailable(
                f"not fetching the signing certificate {url}: already "
                f"{self._per_minute} new certificates in the last minute",
                retry_after=max(wait, 1),
            )
        self._started.append(now)


def check_fresh(
    message: SnsMessage,
    *,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    now: datetime | None = None,
) -> None:
    """Raise StaleMessage unless the signed Timestamp is within `max_age_seconds`
    (plus CLOCK_SKEW) before now, and not more than CLOCK_SKEW after it."""
    try:
        sent = datetime.fromisoformat(message.timestamp)
    except ValueError:
        raise StaleMessage(
            f"Timestamp {message.timestamp[:64]!r} is not an ISO 8601 time"
        ) from None
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=UTC)
    now = now if now is not None else datetime.now(UTC)
    age = now - sent
    if age > timedelta(seconds=max_age_seconds) + CLOCK_SKEW:
        raise StaleMessage(
            f"the message was sent at {message.timestamp}, {age.total_seconds():.0f} s ago: "
            f"older than SNS retries ({max_age_seconds:.0f} s, SNS_MAX_AGE_SECONDS); a replay?"
        )
    if age < -CLOCK_SKEW:
        raise StaleMessage(f"the message's Timestamp {message.timestamp} is in the future")


def confirm_subscription(message: SnsMessage, fetch: Fetch = https_get) -> None:
    """Confirm a subscription by visiting its SubscribeURL, if it is an SNS URL.

    Verify the message first: the URL check only keeps a forged message from
    sending us elsewhere; it does not prove the message came from SNS.
    """
    if message.type != "SubscriptionConfirmation":
        raise InvalidAlarm(f"a {message.type} message confirms no subscription")
    url = message.subscribe_url
    if not url:
        raise InvalidAlarm("the SubscriptionConfirmation has no SubscribeURL")
    if not is_sns_url(url):
        raise SignatureError(f"SubscribeURL {url!r} is not an https URL on an SNS host")
    try:
        fetch(url)
    except (OSError, ValueError) as error:
        raise SnsUnavailable("cannot confirm the subscription") from error


# --- What the webhook checks before a message is parsed ----------------------------


def trusted_verifier(settings: Settings, *, fetch: Fetch = https_get) -> SnsVerifier:
    """The verifier, trusting local copies of signing certificates if given.

    A file in SNS_TRUSTED_CERTS_DIR named like the last part of a
    SigningCertURL (`SimpleNotificationService-<id>.pem`) is used instead of
    fetching that URL; the URL must still be an https SNS URL. At most
    SNS_CERT_FETCHES_PER_MINUTE new certificates are loaded a minute.
    """
    directory = settings.sns_trusted_certs_dir
    if directory is None:
        load = fetch
    else:

        def load(url: str) -> bytes:
            local = directory / url.rsplit("/", 1)[-1]
            if local.is_file():
                return local.read_bytes()
            return fetch(url)

    return SnsVerifier(fetch=load, fetches_per_minute=settings.sns_cert_fetches_per_minute)


def topic_refusal(topic: str, patterns: list[str]) -> str | None:
    """Why messages of `topic` are refused, or None if they are accepted.

    Default-deny: with no topics configured, none is accepted. A valid
    signature proves a message came from SNS, not that it came from a topic
    of ours: any AWS account can subscribe this endpoint to its topics.
    """
    if not patterns:
        return (
            "no SNS topic is accepted: set SNS_TOPIC_ARNS to the ARNs (globs, "
            "comma-separated) of the topics whose messages this webhook should take"
        )
    if not any(fnmatch.fnmatchcase(topic, p) for p in patterns):
        return f"topic {topic[:256]!r} is not in SNS_TOPIC_ARNS"
    return None


class SnsVerification:
    """The checks of every SNS message, in the order of the module's docstring;
    a subscription confirmation is confirmed here and answered as a handshake,
    as is an unsubscribe confirmation. Only a verified Notification is parsed."""

    def __init__(self, settings: Settings, *, fetch: Fetch) -> None:
        self._topics = [p.strip() for p in settings.sns_topic_arns.split(",") if p.strip()]
        self._max_age = settings.sns_max_age_seconds
        self._verifier = trusted_verifier(settings, fetch=fetch)
        self._fetch = fetch

    async def __call__(self, payload: BaseModel, posted: Posted) -> Handshake | None:
        message = expect(payload, SnsMessage)  # signed in its body: `posted` adds nothing
        refusal = topic_refusal(message.topic_arn, self._topics)
        if refusal is not None:
            raise Refused(403, "forbidden", refusal, reason="sns_topic_not_allowed")
        try:
            check_fresh(message, max_age_seconds=self._max_age)
            # The first message from a signing certificate fetches it: a
            # blocking call, kept off the event loop.
            await asyncio.to_thread(self._verifier.verify, message)
            if message.type == "SubscriptionConfirmation":
                await asyncio.to_thread(confirm_subscription, message, self._fetch)
                log.info("SNS subscription confirmed", extra={"topic": message.topic_arn})
                return Handshake({"received": 0, "incidents": [], "confirmed": True})
        except StaleMessage as exc:
            raise Refused(403, "forbidden", str(exc), reason="sns_stale") from None
        except SignatureError as exc:
            raise Refused(403, "forbidden", str(exc), reason="bad_signature") from None
        except SnsUnavailable as exc:
            raise Refused(
                503,
                "unavailable",
                f"{exc}; retry",
                reason="sns_unavailable",
                retry_after=exc.retry_after,
            ) from None
        if message.type != "Notification":
            return Handshake({"received": 0, "incidents": []})
        return None


# --- The source ---------------------------------------------------------------


def _validate(model: type[M], body: dict[str, Any]) -> M:
    """The Message as `model`; its problems are the sender's, so InvalidAlarm (422)."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise InvalidAlarm(f"the SNS Message is not a valid CloudWatch alarm: {problems}") from None


def _queries(trigger: Trigger | None) -> list[Query]:
    if trigger is None:  # a composite alarm
        return []
    if trigger.metric_name or not trigger.metrics:
        return [
            Query(
                namespace=trigger.namespace,
                name=trigger.metric_name,
                dimensions={dim.name: dim.value for dim in trigger.dimensions},
            )
        ]
    queries: list[Query] = []
    for query in trigger.metrics:
        metric = query.metric_stat.metric if query.metric_stat else None
        queries.append(
            Query(
                namespace=metric.namespace if metric else None,
                name=metric.metric_name if metric else None,
                dimensions={dim.name: dim.value for dim in metric.dimensions} if metric else {},
                expression=query.expression,
                label=query.label,
                returns=query.return_data is not False,
            )
        )
    return queries


def read_notification(note: AlarmNotification) -> CloudWatchAlarm:
    return CloudWatchAlarm(
        arn=note.alarm_arn,
        name=note.alarm_name,
        description=note.alarm_description,
        state=note.new_state_value,
        reason=note.new_state_reason,
        changed_at=note.state_change_time,
        # The classic notification does not say when the previous state began.
        started_at=note.state_change_time if note.new_state_value == "ALARM" else None,
        queries=_queries(note.trigger),
        tags=cloudwatch.read_tags(note.alarm_tags),
        account=note.aws_account_id or cloudwatch.arn_account(note.alarm_arn),
        region=cloudwatch.arn_region(note.alarm_arn),
    )


class SnsSource(AlarmSource):
    """`POST /alerts/sns`: SNS Notifications, fingerprinted by alarm ARN.

    Signed, with no bearer token, and posted as text/plain. Confirmations
    carry no alarm and parse to nothing. The fingerprint is the alarm ARN, as
    for `/alerts/cloudwatch`, so the same alarm arriving both ways is one
    Incident.
    """

    name: Source = "sns"
    path: str = "/alerts/sns"
    payload: type[BaseModel] = SnsMessage
    alert_by_alert: bool = False
    # SNS posts its JSON as text/plain, whatever the subscriber wants.
    content_types: tuple[str, ...] = ("application/json", "text/plain")
    bearer_token: bool = False

    def verification(self, settings: Settings, *, fetch: Fetch) -> SnsVerification:
        return SnsVerification(settings, fetch=fetch)

    def parse(self, payload: BaseModel) -> Delivery:
        message = expect(payload, SnsMessage)
        if message.type != "Notification":
            return Delivery([])
        try:
            body = loads(message.message, what="the SNS Message")
        except JsonRefused as refused:
            if refused.code == "json_too_deep":
                raise InvalidAlarm(str(refused)) from None
            raise InvalidAlarm("the SNS Message is not JSON: expected a CloudWatch alarm") from None
        if not isinstance(body, dict):
            raise InvalidAlarm("the SNS Message is not a JSON object: expected a CloudWatch alarm")
        if "detail-type" in body:
            alarm = cloudwatch.read_event(_validate(cloudwatch.CloudWatchEvent, body))
        elif "AlarmName" in body:
            alarm = read_notification(_validate(AlarmNotification, body))
        else:
            raise InvalidAlarm(
                "the SNS Message is not a CloudWatch alarm notification: expected AlarmName "
                "(an alarm action) or detail-type (an EventBridge rule)"
            )
        return Delivery(
            [
                alarm.received(
                    source=self.name, delivery_id=message.message_id, raw=raw_json(message)
                )
            ]
        )


source = SnsSource()
