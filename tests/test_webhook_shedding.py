"""Load shedding in a real webhook process: past INGEST_MAX_IN_FLIGHT alarm
requests at once, the next is answered 503 with Retry-After at once and
changes nothing; within it, nothing is shed and every alarm counts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from alertmanager_support import metric
from api_cuts import ApiServerCuts
from incident_operator.devstack.controlplane import ControlPlane
from webhook_support import (
    eventbridge_alarm,
    generic_alert,
    incidents,
    new_token,
    occurrences,
    serve_webhook,
)

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
def stopped_after() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by the test, stopped when it ends."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def relay(control_plane: ControlPlane) -> Iterator[ApiServerCuts]:
    """The webhook reaches the API server through a relay that can hold its
    requests: alarms it takes stay in flight while the test looks."""
    relay = ApiServerCuts(control_plane.url)
    yield relay
    relay.close()


async def wait_for_metric(
    http: httpx.AsyncClient, sample: str, value: float, *, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while (now := metric((await http.get("/metrics")).text, sample)) != value:
        assert time.monotonic() < deadline, f"{sample} stayed at {now}, not {value}"
        await asyncio.sleep(0.05)


async def test_past_the_limit_an_alarm_gets_503_with_retry_after_and_changes_nothing(
    kubeconfig: Path,
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    relay: ApiServerCuts,
    stopped_after: list[subprocess.Popen[str]],
) -> None:
    token = new_token()
    url, process = serve_webhook(
        relay.kubeconfig(kubeconfig, tmp_path / "kubeconfig"),
        namespace,
        INGEST_TOKENS=token,
        INGEST_MAX_IN_FLIGHT="2",
    )
    stopped_after.append(process)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        with relay.held():
            taken = [
                asyncio.create_task(http.post("/alert", json=generic_alert(f"held-{i}")))
                for i in range(2)
            ]
            await wait_for_metric(http, "incident_ingest_in_flight", 2)
            started = time.monotonic()
            shed = await http.post("/alert", json=generic_alert("shed"))
            shed_cloudwatch = await http.post("/alerts/cloudwatch", json=eventbridge_alarm())
            answered_in = time.monotonic() - started
            # Never shed: a saturated webhook is alive, and says so.
            health = await http.get("/health")
            assert not any(task.done() for task in taken), "the relay did not hold the writes"
        answers = await asyncio.gather(*taken)
        after = (await http.get("/metrics")).text
        # Once there is room again, the alarm refused is taken.
        retried = await http.post("/alert", json=generic_alert("shed"))

    for refused in (shed, shed_cloudwatch):
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"] == "overloaded"
        assert "INGEST_MAX_IN_FLIGHT" in refused.json()["message"]
    assert answered_in < 2, "a shed request must be answered at once, not after the held ones"
    assert health.status_code == 200
    assert [a.status_code for a in answers] == [200, 200]
    assert metric(after, "incident_ingest_shed_total", source="generic") == 1
    assert metric(after, "incident_ingest_shed_total", source="cloudwatch") == 1
    assert metric(after, "incident_ingest_in_flight") == 0
    # Refused requests count nowhere else: not received, not rejected.
    assert metric(after, "incident_alarms_received_total") == 2
    assert metric(after, "incident_ingest_rejected_total") == 0
    assert retried.status_code == 200, retried.text
    # The two held alarms and the retried one; the refused cloudwatch alarm
    # wrote nothing.
    services = Counter(i["spec"]["service"]["name"] for i in incidents(api, namespace))
    assert services == {"held-0": 1, "held-1": 1, "shed": 1}


async def test_a_slow_body_holds_no_slot_and_is_refused_if_the_webhook_filled_meanwhile(
    kubeconfig: Path,
    api: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    relay: ApiServerCuts,
    stopped_after: list[subprocess.Popen[str]],
) -> None:
    token = new_token()
    url, process = serve_webhook(
        relay.kubeconfig(kubeconfig, tmp_path / "kubeconfig"),
        namespace,
        INGEST_TOKENS=token,
        INGEST_MAX_IN_FLIGHT="1",
    )
    stopped_after.append(process)
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(generic_alert("slow")).encode()
    # A sender that sends its headers and half its body, and stalls.
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST /alert HTTP/1.1\r\nHost: webhook\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    await writer.drain()
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        await asyncio.sleep(0.5)  # the webhook has its headers
        with relay.held():
            # The only slot is free: the stalled sender does not hold it.
            taken = asyncio.create_task(http.post("/alert", json=generic_alert("taken")))
            await wait_for_metric(http, "incident_ingest_in_flight", 1)
            # The stalled body comes in now, and finds the webhook full.
            writer.write(body[len(body) // 2 :])
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        answer = await taken
        after = (await http.get("/metrics")).text
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
    refusal = json.loads(await reader.readexactly(int(headers["content-length"])))
    writer.close()

    assert head.startswith("HTTP/1.1 503 "), head
    assert headers["retry-after"] == "1"
    assert refusal["error"] == "overloaded"
    assert answer.status_code == 200, answer.text
    assert metric(after, "incident_ingest_shed_total", source="generic") == 1
    assert metric(after, "incident_ingest_in_flight") == 0
    assert [i["spec"]["service"]["name"] for i in incidents(api, namespace)] == ["taken"]


async def test_senders_within_the_limit_are_never_shed_and_count_exactly(
    kubeconfig: Path,
    api: client.ApiClient,
    namespace: str,
    stopped_after: list[subprocess.Popen[str]],
) -> None:
    # As many senders as the limit, each sending again as soon as it has its
    # answer: the slot is free by then, so none is ever refused.
    limit, alarms, fingerprints = 4, 200, 5
    token = new_token()
    url, process = serve_webhook(
        kubeconfig, namespace, INGEST_TOKENS=token, INGEST_MAX_IN_FLIGHT=str(limit)
    )
    stopped_after.append(process)
    queue = [generic_alert(f"steady-{i % fingerprints}") for i in range(alarms)]
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        limits=httpx.Limits(max_connections=limit),
        timeout=30,
    ) as http:

        async def sender() -> None:
            while queue:
                statuses[(await http.post("/alert", json=queue.pop())).status_code] += 1

        await asyncio.gather(*(sender() for _ in range(limit)))
        after = (await http.get("/metrics")).text

    assert statuses == {200: alarms}
    assert metric(after, "incident_ingest_shed_total") == 0
    items = incidents(api, namespace)
    assert len(items) == fingerprints
    assert sum(occurrences(item) for item in items) == alarms


async def test_a_storm_on_a_few_incidents_waits_out_their_paced_writes_and_is_never_shed(
    kubeconfig: Path,
    api: client.ApiClient,
    namespace: str,
    stopped_after: list[subprocess.Popen[str]],
) -> None:
    # Far more senders waiting at once than the limit, all on two Incidents
    # written a moment ago: each gives its slot back while it waits for the
    # paced write, so none is refused, and a write a second each takes them.
    limit, fingerprints = 4, 2
    token = new_token()
    url, process = serve_webhook(
        kubeconfig, namespace, INGEST_TOKENS=token, INGEST_MAX_IN_FLIGHT=str(limit),
        INGEST_WRITE_INTERVAL_SECONDS="1",
    )  # fmt: skip
    stopped_after.append(process)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        for i in range(fingerprints):  # the Incidents exist and were just written
            assert (await http.post("/alert", json=generic_alert(f"hot-{i}"))).is_success

        async def send(i: int) -> httpx.Response:
            await asyncio.sleep(i * 0.01)  # open loop: one every 10 ms, 60 within the interval
            return await http.post("/alert", json=generic_alert(f"hot-{i % fingerprints}"))

        answers = await asyncio.gather(*(send(i) for i in range(60)))
        after = (await http.get("/metrics")).text
    assert Counter(answer.status_code for answer in answers) == {200: 60}
    assert metric(after, "incident_ingest_shed_total") == 0
    assert sum(occurrences(item) for item in incidents(api, namespace)) == 62
