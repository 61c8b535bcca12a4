"""SNS signing certificates: each fetched once, failures remembered, new
fetches bounded per minute, so that forged messages cannot make the webhook
fetch on their behalf (issue 12, item 11).

The fetch is a stand-in for SNS's hosts that records what it is asked for;
the clock is a number the test moves.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
from email.message import Message as Headers
from pathlib import Path
from typing import Any

import pytest

from incident_operator.ingest.sources import sns
from sns_signing import CERT_URL, Signer, make_signer

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SnsHosts:
    """Serves `certificates` by URL, answers 404 for any other URL (or
    `error` for every URL when set), and records every URL asked for."""

    def __init__(self, certificates: dict[str, bytes] | None = None) -> None:
        self.certificates = certificates or {}
        self.urls: list[str] = []
        self.error: Exception | None = None

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        if self.error is not None:
            raise self.error
        if url in self.certificates:
            return self.certificates[url]
        raise urllib.error.HTTPError(url, 404, "Not Found", Headers(), None)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


def signed(signer: Signer, url: str = CERT_URL) -> sns.SnsMessage:
    body: dict[str, Any] = json.loads((PAYLOADS / "sns-notification-alarm.json").read_text())
    return sns.SnsMessage.model_validate(signer.sign(body, url=url))


def forged_url(index: int) -> str:
    return f"https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-forged{index}.pem"


def test_new_certificate_fetches_are_bounded_per_minute(signer: Signer) -> None:
    hosts, clock = SnsHosts(), Clock()
    verifier = sns.SnsVerifier(fetch=hosts, fetches_per_minute=5, clock=clock)
    outcomes: list[str] = []
    for index in range(20):
        clock.now += 1
        try:
            verifier.verify(signed(signer, forged_url(index)))
        except sns.SnsUnavailable as unavailable:
            outcomes.append(f"unavailable, retry after {unavailable.retry_after}")
        except sns.SignatureError:
            outcomes.append("refused")
    assert len(hosts.urls) == 5
    # The first fetch started at 1001; at 1006 (the sixth message) the next
    # is allowed at 1061, 55 s later.
    assert outcomes[:6] == ["refused"] * 5 + ["unavailable, retry after 55"]
    assert all(outcome.startswith("unavailable") for outcome in outcomes[5:])
    # A minute after the first fetches, new ones may start again.
    clock.now += 60
    with pytest.raises(sns.SignatureError, match="no signing certificate"):
        verifier.verify(signed(signer, forged_url(100)))
    assert len(hosts.urls) == 6


def test_twenty_forged_certificate_urls_cause_at_most_ten_fetches(signer: Signer) -> None:
    # The reported amplification, with the default budget: 20 forged
    # messages, each naming another URL on an SNS host, made 20 fetches.
    hosts = SnsHosts()
    verifier = sns.SnsVerifier(fetch=hosts)
    for index in range(20):
        with pytest.raises((sns.SignatureError, sns.SnsUnavailable)):
            verifier.verify(signed(signer, forged_url(index)))
    assert len(hosts.urls) == sns.DEFAULT_FETCHES_PER_MINUTE == 10


def test_a_certificate_is_fetched_once_and_kept(signer: Signer) -> None:
    hosts = SnsHosts({CERT_URL: signer.pem})
    verifier = sns.SnsVerifier(fetch=hosts, fetches_per_minute=1, clock=Clock())
    for _ in range(50):
        verifier.verify(signed(signer))
    assert hosts.urls == [CERT_URL]


def test_a_url_with_no_certificate_is_remembered_for_an_hour(signer: Signer) -> None:
    hosts, clock = SnsHosts(), Clock()
    verifier = sns.SnsVerifier(fetch=hosts, clock=clock)
    for _ in range(13):  # 0, 5, ... 60 minutes
        with pytest.raises(sns.SignatureError, match="no signing certificate"):
            verifier.verify(signed(signer, forged_url(1)))
        clock.now += 300
    assert hosts.urls == [forged_url(1)] * 2  # fetched again only after the hour


def test_a_document_that_is_not_a_certificate_is_remembered(signer: Signer) -> None:
    hosts = SnsHosts({forged_url(1): b"<html>not a certificate</html>"})
    verifier = sns.SnsVerifier(fetch=hosts, clock=Clock())
    for _ in range(3):
        with pytest.raises(sns.SignatureError, match="PEM"):
            verifier.verify(signed(signer, forged_url(1)))
    assert hosts.urls == [forged_url(1)]


def test_an_unreachable_sns_is_remembered_briefly(signer: Signer) -> None:
    hosts, clock = SnsHosts({CERT_URL: signer.pem}), Clock()
    hosts.error = TimeoutError("timed out")
    verifier = sns.SnsVerifier(fetch=hosts, clock=clock)
    with pytest.raises(sns.SnsUnavailable):
        verifier.verify(signed(signer))
    clock.now += sns.UNREACHABLE_TTL / 2
    with pytest.raises(sns.SnsUnavailable) as remembered:
        verifier.verify(signed(signer))
    assert remembered.value.retry_after == math.ceil(sns.UNREACHABLE_TTL / 2)
    assert len(hosts.urls) == 1
    # SNS retries later; by then the webhook asks again, and it works.
    hosts.error = None
    clock.now += sns.UNREACHABLE_TTL
    verifier.verify(signed(signer))
    assert len(hosts.urls) == 2


def test_messages_arriving_together_fetch_their_certificate_once(signer: Signer) -> None:
    started = threading.Event()

    class SlowHost(SnsHosts):
        def __call__(self, url: str) -> bytes:
            started.set()
            time.sleep(0.3)
            return super().__call__(url)

    hosts = SlowHost({CERT_URL: signer.pem})
    verifier = sns.SnsVerifier(fetch=hosts, fetches_per_minute=1)
    failures: list[Exception] = []

    def verify() -> None:
        try:
            verifier.verify(signed(signer))
        except Exception as failure:  # collected for the assertion below
            failures.append(failure)

    threads = [threading.Thread(target=verify) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert started.is_set() and failures == []
    assert hosts.urls == [CERT_URL]
