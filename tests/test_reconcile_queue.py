"""How the reconciler schedules passes (no cluster needed).

kopf's handler only submits a body; the passes run in the reconciler's own
pool: at most N at a time, one at a time per Incident, each on the newest
body. The pass itself is replaced by a recording double here; the operator
tests run the real one against the API server. The last tests drive the
queue (`reconcile/queue.py`) on its own: backoff, wake-ups, forgetting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from kubernetes import client

from incident_operator.models import Assessment, Incident
from incident_operator.notify.log import LogNotifier
from incident_operator.policy import Policy
from incident_operator.reconcile import queue
from incident_operator.reconcile.phases import Ports
from incident_operator.reconcile.queue import PassQueue
from incident_operator.reconcile.reconciler import Policies, Reconciler
from incident_operator.timeline.dynamodb import LogTimeline


async def _no_assessment(incident: Incident, policy: Policy) -> Assessment:
    raise AssertionError("the recording reconciler never assesses")


class Recording(Reconciler):
    """Records each pass (uid, resourceVersion, body); a pass ends when released."""

    def __init__(self, *, concurrency: int) -> None:
        super().__init__(
            api=client.ApiClient(),
            ports=Ports(assess=_no_assessment, remediator=None),  # type: ignore[arg-type]
            timeline=LogTimeline(),
            policies=Policies(),
            notifier=LogNotifier(),
            concurrency=concurrency,
        )
        self.passes: list[tuple[str, str]] = []
        self.bodies: list[Mapping[str, Any]] = []
        self.in_pass: set[str] = set()
        self.most_at_once = 0
        self.release = asyncio.Event()

    async def _reconcile(self, body: Mapping[str, Any]) -> None:
        uid = body["metadata"]["uid"]
        assert uid not in self.in_pass, f"two passes at once for {uid}"
        self.in_pass.add(uid)
        self.most_at_once = max(self.most_at_once, len(self.in_pass))
        self.passes.append((uid, body["metadata"]["resourceVersion"]))
        self.bodies.append(body)
        try:
            await self.release.wait()
        finally:
            self.in_pass.discard(uid)


def body(
    uid: str, version: str = "1", *, status: dict[str, Any] | None = None, **metadata: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "incident-response.dev/v1alpha1",
        "kind": "Incident",
        "metadata": {"uid": uid, "name": uid, "namespace": "ns", "resourceVersion": version,
                     **metadata},
        "spec": {"title": "t"},
        "status": status or {},
    }  # fmt: skip


def finished(uid: str, phase: str = "Resolved", version: str = "1") -> dict[str, Any]:
    return body(uid, version, status={"phase": phase, "alarmState": "ALARM"})


async def settle(reconciler: Recording) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def finish(reconciler: Recording) -> None:
    reconciler.release.set()
    async with asyncio.timeout(5):
        while not reconciler.idle:
            await asyncio.sleep(0.01)


async def test_submit_returns_at_once_and_at_most_n_passes_run() -> None:
    reconciler = Recording(concurrency=3)
    for index in range(10):
        reconciler.submit(body(f"u{index}"))
    assert reconciler.passes == []  # nothing ran inside submit
    await settle(reconciler)
    assert len(reconciler.in_pass) == 3
    await finish(reconciler)
    assert sorted(reconciler.passes) == sorted((f"u{i}", "1") for i in range(10))
    assert reconciler.most_at_once == 3


async def test_a_waiting_incident_gets_one_pass_on_its_newest_body() -> None:
    reconciler = Recording(concurrency=1)
    reconciler.submit(body("busy"))
    await settle(reconciler)
    for version in ("1", "2", "3"):
        reconciler.submit(body("a", version))
    await finish(reconciler)
    assert reconciler.passes == [("busy", "1"), ("a", "3")]


async def test_an_event_during_a_pass_is_passed_after_it_never_alongside() -> None:
    reconciler = Recording(concurrency=4)
    reconciler.submit(body("a", "1"))
    await settle(reconciler)
    reconciler.submit(body("a", "2"))
    await settle(reconciler)
    assert reconciler.passes == [("a", "1")]  # the second waits for the first
    await finish(reconciler)
    assert reconciler.passes == [("a", "1"), ("a", "2")]


async def test_a_wake_up_read_does_not_replace_a_waiting_body() -> None:
    reconciler = Recording(concurrency=1)
    reconciler.submit(body("busy"))
    await settle(reconciler)
    reconciler.submit(body("a", "2"))  # from the watch
    reconciler.submit(body("a", "1"), replace=False)  # a wake-up's (older) read
    reconciler.submit(body("b", "5"), replace=False)  # nothing waiting: due
    await finish(reconciler)
    assert reconciler.passes == [("busy", "1"), ("a", "2"), ("b", "5")]


async def test_a_forgotten_incident_is_not_passed() -> None:
    reconciler = Recording(concurrency=1)
    reconciler.submit(body("busy"))
    await settle(reconciler)
    reconciler.submit(body("gone"))
    reconciler.forget("gone")
    await finish(reconciler)
    assert reconciler.passes == [("busy", "1")]


async def test_a_waiting_body_drops_managed_fields_and_keeps_the_rest() -> None:
    reconciler = Recording(concurrency=1)
    sent = body("a", labels={"team": "x"}, managedFields=[{"manager": "kubectl"}])
    reconciler.submit(sent)
    await finish(reconciler)
    received = reconciler.bodies[0]
    assert "managedFields" not in received["metadata"]
    assert received["metadata"]["labels"] == {"team": "x"}
    assert {**received, "metadata": {}} == {**sent, "metadata": {}}
    assert "managedFields" in sent["metadata"]  # the caller's body is untouched


async def test_incidents_needing_a_decision_go_before_finished_ones() -> None:
    # At a restart most Incidents are finished: their passes only repair
    # publishing, and must not hold up one that is waiting for a decision.
    reconciler = Recording(concurrency=1)
    reconciler.submit(body("busy"))
    await settle(reconciler)
    reconciler.submit(finished("resolved"))
    reconciler.submit(finished("ignored", "Ignored"))
    reconciler.submit(body("new"))
    reconciler.submit(
        body("escalated-recovered", status={"phase": "Escalated", "alarmState": "OK"})
    )
    reconciler.submit(body("awaiting", status={"phase": "AwaitingApproval"}))
    await finish(reconciler)
    assert [uid for uid, _ in reconciler.passes] == [
        "busy", "new", "escalated-recovered", "awaiting", "resolved", "ignored",
    ]  # fmt: skip


async def test_a_finished_incident_that_reopens_while_waiting_is_due_at_once() -> None:
    reconciler = Recording(concurrency=1)
    reconciler.submit(body("busy"))
    await settle(reconciler)
    reconciler.submit(finished("a", "Escalated", version="1"))
    reconciler.submit(finished("b", version="1"))
    reconciler.submit(body("a", "2", status={"phase": "Escalated", "alarmState": "OK"}))
    await finish(reconciler)
    assert reconciler.passes == [("busy", "1"), ("a", "2"), ("b", "1")]


def valid(uid: str, version: str) -> dict[str, Any]:
    """A body that passes as an Incident (a failed pass retries only those)."""
    spec = {"source": "generic", "fingerprint": uid, "title": "t", "severity": "low",
            "service": {"name": "s"}, "alarm": {"name": "a"}}  # fmt: skip
    return {**body(uid, version), "spec": spec}


class Failing(Recording):
    """Every pass fails, as while the API server is out of reach."""

    async def _reconcile(self, body: Mapping[str, Any]) -> None:
        self.passes.append((body["metadata"]["uid"], body["metadata"]["resourceVersion"]))
        raise ConnectionError("API server unreachable")


async def test_a_failure_while_a_retry_is_due_does_not_lengthen_the_backoff() -> None:
    # The failed pass wrote something, say; the watch's event of that write
    # brings a second pass, which fails for the same cause. The retry stays
    # where the first failure put it: one outage, one step of backoff.
    reconciler = Failing(concurrency=1)
    reconciler.submit(valid("a", "1"))
    await settle(reconciler)
    first = reconciler._queue.wakeup_in("a")
    reconciler.submit(valid("a", "2"))
    await settle(reconciler)
    assert reconciler.passes == [("a", "1"), ("a", "2")]
    assert first is not None and 0.9 < first <= 1.0  # the first step: RETRY_BASE_SECONDS
    later = reconciler._queue.wakeup_in("a")
    assert later is not None and later <= first
    assert reconciler._queue.failures("a") == 1
    reconciler.forget("a")


# --- the queue on its own: a pass and a read that are plain functions ---------


class Stub:
    """A PassQueue whose passes fail while `failing`, and whose wake-up reads
    answer from `stored` (missing: deleted) or raise `unreachable`."""

    def __init__(self) -> None:
        self.passes: list[str] = []
        self.reads: list[str] = []
        self.failing = False
        self.unreachable: Exception | None = None
        self.stored: dict[str, dict[str, Any]] = {}
        self.queue = PassQueue(run=self.run, read=self.read, concurrency=2)

    async def run(self, body: dict[str, Any]) -> None:
        self.passes.append(body["metadata"]["resourceVersion"])
        if self.failing:
            raise ConnectionError("API server unreachable")

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        if self.unreachable is not None:
            raise self.unreachable
        return self.stored.get(name)


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.005)


def retries(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [r.retry_in for r in caplog.records if getattr(r, "retry_in", None) is not None]


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue, "RETRY_BASE_SECONDS", 0.05)
    monkeypatch.setattr(queue, "RETRY_MAX_SECONDS", 0.2)


async def test_failed_passes_back_off_doubling_to_the_cap_and_a_success_starts_over(
    fast_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    stub = Stub()
    stub.failing = True
    stub.stored["a"] = valid("a", "2")  # what each retry reads
    stub.queue.submit(valid("a", "1"))
    await until(lambda: len(stub.passes) == 5)
    assert retries(caplog)[:4] == [0.05, 0.1, 0.2, 0.2]  # each from a fresh read
    assert stub.passes == ["1", "2", "2", "2", "2"]
    stub.failing = False
    await until(lambda: len(stub.passes) == 6)
    await until(lambda: stub.queue.failures("a") == 0)
    stub.failing = True
    caplog.clear()
    stub.queue.submit(valid("a", "3"))
    await until(lambda: len(retries(caplog)) == 1)
    assert retries(caplog) == [0.05]
    stub.queue.forget("a")


async def test_an_invalid_body_is_not_retried(fast_backoff: None) -> None:
    stub = Stub()
    stub.failing = True
    stub.queue.submit(body("a"))  # no spec: no Incident
    await until(lambda: stub.queue.failures("a") == 1)
    assert stub.queue.wakeup_in("a") is None


async def test_a_new_wake_up_replaces_the_one_set_before() -> None:
    stub = Stub()
    stub.stored["a"] = valid("a", "7")
    metadata = stub.stored["a"]["metadata"]
    stub.queue.wake_later(metadata, 0.05)
    stub.queue.wake_later(metadata, 30)  # later: the sooner one is gone
    remaining = stub.queue.wakeup_in("a")
    assert remaining is not None and 29 < remaining <= 30
    await asyncio.sleep(0.2)
    assert stub.reads == []
    stub.queue.wake_later(metadata, 0.05)  # sooner: the later one is gone
    await until(lambda: stub.passes == ["7"])
    assert stub.reads == ["a"]
    assert stub.queue.wakeup_in("a") is None
    await asyncio.sleep(0.1)
    assert stub.reads == ["a"]  # woken once


async def test_a_wake_up_whose_read_fails_backs_off_and_reads_again(
    fast_backoff: None,
) -> None:
    stub = Stub()
    stub.unreachable = ConnectionError("refused")
    stub.stored["a"] = valid("a", "4")
    stub.queue.wake_later(stub.stored["a"]["metadata"], 0.05)
    await until(lambda: len(stub.reads) == 2)
    stub.unreachable = None
    await until(lambda: stub.passes == ["4"])
    assert stub.queue.failures("a") == 0  # the pass succeeded


async def test_a_wake_up_for_a_deleted_incident_passes_nothing() -> None:
    stub = Stub()
    stub.queue.wake_later(valid("gone", "1")["metadata"], 0.05)
    await until(lambda: stub.reads == ["gone"])
    await asyncio.sleep(0.05)
    assert stub.passes == []
    assert stub.queue.idle


async def test_forget_drops_the_waiting_body_the_wake_up_and_the_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub = Stub()
    stub.failing = True
    stub.queue.submit(valid("a", "1"))
    await until(lambda: stub.queue.failures("a") == 1)
    stub.queue.wake_later(valid("a", "1")["metadata"], 0.1)
    release = asyncio.Event()

    async def busy(body: dict[str, Any]) -> None:
        await release.wait()

    stub.queue._run = busy  # both workers busy: "a" waits
    stub.queue.submit(valid("b", "1"))
    stub.queue.submit(valid("c", "1"))
    await until(lambda: stub.queue.depth == 2)
    stub.queue.submit(valid("a", "2"))
    assert stub.queue.depth == 3
    stub.queue.forget("a")
    assert stub.queue.depth == 2
    assert stub.queue.wakeup_in("a") is None
    assert stub.queue.failures("a") == 0
    release.set()
    await until(lambda: stub.queue.idle)
    await asyncio.sleep(0.2)  # past the forgotten wake-up
    assert stub.reads == []
    assert stub.passes == ["1"]  # "a" was not passed again
    # Seen again (same uid), it starts from nothing: the first step of backoff.
    stub.queue._run = stub.run
    caplog.clear()
    stub.queue.submit(valid("a", "3"))
    await until(lambda: len(retries(caplog)) == 1)
    assert retries(caplog) == [1.0]
    stub.queue.forget("a")


async def test_a_closed_queue_takes_no_pass_and_wakes_nothing() -> None:
    stub = Stub()
    stub.stored["a"] = valid("a", "1")
    stub.queue.wake_later(stub.stored["a"]["metadata"], 0.05)
    await stub.queue.close(grace=1)
    stub.queue.submit(valid("b", "1"))
    stub.queue.wake_later(stub.stored["a"]["metadata"], 0.05)
    await asyncio.sleep(0.15)
    assert (stub.reads, stub.passes) == ([], [])
    assert stub.queue.idle
