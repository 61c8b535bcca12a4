"""`make bench`: measure ingest, a storm, overload, the whole pipeline, memory,
and the evidence an assessment gathers.

Everything runs on this machine in one go: a local kube-apiserver + etcd,
moto, the webhook and the operator as real processes. Figures from one run
are comparable with each other, not with another machine's. A benchmark
reports; it does not pass or fail. Ingest and storm rates come with the CPU
milliseconds each process (API server, etcd, webhook, this client) spent per
alarm: on a machine they share, that is what a rate is made of.

    python -m bench [--quick]      # --quick: smaller counts, for a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from bench.alarm_to_action import bench_alarm_to_action
from bench.evidence import bench_evidence
from bench.rig import (
    MEASURED_ONLY,
    TOKEN,
    WARM_UP,
    Measured,
    Rig,
    alert,
    answers_200,
    list_incidents,
    memory_mb,
    metric_sum,
    offer,
    process_cpu_seconds,
    quantile,
    say,
    timestamp,
)
from incident_operator.devstack.controlplane import free_port
from incident_operator.devstack.waiting import wait_for
from incident_operator.ingest.names import incident_name
from incident_operator.ingest.recorder import incident_object
from incident_operator.ingest.sources import generic
from incident_operator.models import API_VERSION, GROUP, VERSION
from incident_operator.remediate.target import service_name


async def post_all(url: str, bodies: list[dict[str, Any]], concurrency: int) -> list[float]:
    """POST every body to /alert with `concurrency` in flight; per-request seconds.

    The client is aiohttp, not httpx: the bench client shares the machine's
    two cores with the webhook and the API server, and at 50 connections
    httpx's connection pool cost about 6 ms of CPU per request (more than the
    webhook and the API server together), aiohttp about 0.3 ms. A client that
    costs more than the server measures the client.
    """
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=60)
    pending = list(reversed(bodies))
    latencies: list[float] = []

    async def worker(http: aiohttp.ClientSession) -> None:
        while pending:
            body = pending.pop()
            started = time.perf_counter()
            async with http.post("/alert", json=body) as answer:
                text = await answer.text()
                if answer.status != 200:
                    raise RuntimeError(f"webhook answered {answer.status}: {text}")
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(
        base_url=url, headers=headers, connector=connector, timeout=timeout
    ) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return latencies


def raw_creates(
    rig: Rig,
    namespace: str,
    count: int,
    concurrency: int,
    objects: list[dict[str, Any]] | None = None,
    rate: float | None = None,
) -> Measured:
    """Creates with the Kubernetes client itself: small Incidents, or
    `objects`; as fast as `concurrency` threads go, or each on a schedule of
    `rate` a second (as alarms arrive at the webhook)."""
    body = {
        "apiVersion": API_VERSION,
        "kind": "Incident",
        "spec": {
            "source": "generic",
            "fingerprint": "x",
            "title": "raw",
            "severity": "low",
            "service": {"name": "raw"},
            "alarm": {"name": "raw"},
        },
    }

    def create(index: int) -> None:
        if rate is not None:
            time.sleep(max(0.0, started + index / rate - time.perf_counter()))
        made = objects[index] if objects else {**body, "metadata": {"name": f"raw-{index}"}}
        rig.objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", made)

    with ThreadPoolExecutor(concurrency) as pool, Measured(rig, count) as measured:
        started = time.perf_counter()
        list(pool.map(create, range(count)))
    return measured


def webhook_objects(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Incidents the webhook creates for these /alert bodies, as it builds them."""
    made = []
    for body in bodies:
        payload = generic.source.payload.model_validate(body)
        (alarm,) = generic.source.parse(payload).alarms
        name = incident_name(service=service_name(alarm.service), fingerprint=alarm.fingerprint)
        made.append(incident_object(name, alarm))
    return made


def post_timed(
    rig: Rig, prefix: str, bodies: list[dict[str, Any]], concurrency: int
) -> tuple[str, Measured, list[float]]:
    """Post `bodies` to a fresh webhook and namespace: (namespace, measured, latencies).

    The webhook first gets a few alarms of its own, so that connections are
    open and code paths warm when the clock starts, as for the raw creates.
    """
    namespace = rig.namespace(prefix)
    url = rig.webhook(namespace)
    warm = [alert("warm-up", f"{prefix}-warm-up-{i}") for i in range(WARM_UP)]
    asyncio.run(post_all(url, warm, concurrency))
    with Measured(rig, len(bodies)) as measured:
        latencies = asyncio.run(post_all(url, bodies, concurrency))
    return namespace, measured, latencies


def bench_ingest(rig: Rig, *, count: int, concurrency: int, raw: Measured) -> dict[str, Any]:
    say(f"ingest: {count} new alarms through the webhook (vs {raw.rate:.0f} raw creates/s)")
    bodies = [alert(f"svc-{i % 50}", f"ingest-{i}") for i in range(count)]
    namespace, hook, latencies = post_timed(rig, "bench-ingest", bodies, concurrency)
    assert len(list_incidents(rig, namespace, MEASURED_ONLY)) == count
    # The same Incidents the webhook created, created directly: the raw
    # baseline above writes smaller objects (no labels, no alarm text), and
    # the API server's cost grows with the object.
    objects = webhook_objects(bodies)
    same = raw_creates(rig, rig.namespace("bench-ingest-raw"), count, concurrency, objects)
    # The same objects again, created at the rate the webhook reached: the
    # API server spends less per create the faster creates come, so this is
    # the fair comparison of what the webhook's own requests cost it.
    paced = raw_creates(
        rig, rig.namespace("bench-ingest-paced"), count, concurrency, objects, rate=hook.rate
    )
    idle = rig.idle_cpu_ms_per_s()
    return {
        "alarms": count,
        "concurrency": concurrency,
        "webhook_alarms_per_s": round(hook.rate, 1),
        "raw_creates_per_s": round(raw.rate, 1),
        "ratio": round(hook.rate / raw.rate, 2),
        "raw_creates_same_objects_per_s": round(same.rate, 1),
        "ratio_same_objects": round(hook.rate / same.rate, 2),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(quantile(latencies, 0.99) * 1000, 1),
        # Where the CPU goes: all of these share the machine's cores.
        "cpu_ms_per_alarm": hook.cpu_ms,
        "cpu_ms_per_raw_create": raw.cpu_ms,
        "cpu_ms_per_raw_create_same_objects": same.cpu_ms,
        "cpu_ms_per_raw_create_same_objects_at_webhook_rate": paced.cpu_ms,
        # On a saturated machine a rate is the cores over the CPU per item:
        # the ratio the CPU figures give, whatever else shares the machine.
        "ratio_same_objects_by_cpu": round(same.cpu_ms["total"] / hook.cpu_ms["total"], 2),
        # What the API server and etcd spend idle, each second.
        "idle_cpu_ms_per_s": idle,
    }


def bench_storm(
    rig: Rig, *, count: int, fingerprints: int, concurrency: int, raw: Measured
) -> dict[str, Any]:
    say(f"storm: {count} alarms over {fingerprints} fingerprints at concurrency {concurrency}")
    bodies = [alert(f"storm-{i % fingerprints}", f"storm-{i % fingerprints}") for i in range(count)]
    before = rig.requests()
    namespace, storm, latencies = post_timed(rig, "bench-storm", bodies, concurrency)
    writes = rig.requests() - before
    items = list_incidents(rig, namespace, MEASURED_ONLY)
    total = sum(item["status"]["occurrences"] for item in items)
    patches = writes[("PATCH", "incidents", "status")]
    return {
        "alarms": count,
        "fingerprints": fingerprints,
        "concurrency": concurrency,
        "incidents": len(items),
        "total_occurrences": total,
        "exact": len(items) == fingerprints and total == count,
        "alarms_per_s": round(storm.rate, 1),
        "vs_raw_creates": round(storm.rate / raw.rate, 2),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(quantile(latencies, 0.99) * 1000, 1),
        # Each patch adds a batch of alarms to one Incident's count.
        "status_patches": patches,
        "alarms_per_patch": round((count - fingerprints) / patches, 2) if patches else None,
        "cpu_ms_per_alarm": storm.cpu_ms,
    }


def bench_storm_open_loop(
    rig: Rig, *, rate: float, seconds: float, fingerprints: int
) -> dict[str, Any]:
    """A storm as real senders make it: alarms leave on a fixed schedule
    whatever became of the earlier ones. What must hold: every answered alarm
    counted exactly, no 5xx; what is measured: the API server's writes per
    alarm (counted by the server), answer latencies, the webhook's CPU."""
    count = int(rate * seconds)
    say(f"storm, open loop: {count} alarms at {rate:.0f}/s over {fingerprints} fingerprints")
    namespace = rig.namespace(f"bench-open-storm-{int(rate)}")
    url = rig.webhook(namespace)
    warm = [alert("warm-up", f"open-storm-warm-up-{i}") for i in range(WARM_UP)]
    asyncio.run(post_all(url, warm, 16))
    bodies = [alert(f"storm-{i % fingerprints}", f"storm-{i % fingerprints}") for i in range(count)]
    before = rig.requests()
    with Measured(rig, count) as measured:
        offered, elapsed, outcomes = uvloop.run(offer(url, bodies, rate=rate))
    writes = rig.requests() - before
    items = list_incidents(rig, namespace, MEASURED_ONLY)
    kinds = Counter(kind for kind, _ in outcomes)
    answered = [seconds for kind, seconds in outcomes if kind.startswith("2")]
    total = sum((item.get("status") or {}).get("occurrences", 1) for item in items)
    written = (
        writes[("POST", "incidents", "")]
        + writes[("PATCH", "incidents", "status")]
        + writes[("PUT", "incidents", "status")]
    )
    p99 = quantile(answered, 0.99) if answered else None
    return {
        "alarms": count,
        "offered_per_s": round(offered, 1),
        "fingerprints": fingerprints,
        "answered_2xx": len(answered),
        "answered_5xx": sum(n for kind, n in kinds.items() if kind.startswith("5")),
        "other": {kind: n for kind, n in kinds.items() if kind[0] not in "25"},
        "incidents": len(items),
        "total_occurrences": total,
        "exact": len(items) == fingerprints and total == len(answered),
        "api_writes": written,
        "api_writes_per_alarm": round(written / count, 3),
        "api_writes_per_s": round(written / elapsed, 1),
        "latency_p50_ms": round(statistics.median(answered) * 1000, 1) if answered else None,
        "latency_p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
        # Kept up: exact, every alarm answered 2xx, and the p99 under a second.
        "kept_up": len(answered) == count and total == count and (p99 or 99) < 1.0,
        "cpu_ms_per_alarm": measured.cpu_ms,
    }


def bench_overload(rig: Rig, *, rate: float, seconds: float) -> dict[str, Any]:
    """New alarms offered faster than the webhook can record them: what is
    not taken must be refused with 503 and Retry-After, not reset, and what
    was answered 2xx must be exactly what was written."""
    count = int(rate * seconds)
    say(f"overload: {count} new alarms offered at {rate:.0f}/s to one webhook")
    namespace = rig.namespace("bench-overload")
    url = rig.webhook(namespace)
    warm = [alert("warm-up", f"overload-warm-up-{i}") for i in range(WARM_UP)]
    asyncio.run(post_all(url, warm, 16))
    bodies = [alert(f"svc-{i % 50}", f"overload-{i}") for i in range(count)]
    load = os.getloadavg()[0]
    kernel = _tcp_counters()
    queue = AcceptQueue(int(url.rsplit(":", 1)[1]))
    with queue, Measured(rig, count) as measured:
        # uvloop, as the webhook runs: the open-loop client opens connections
        # by the hundred and must not be what falls behind.
        offered, elapsed, outcomes = uvloop.run(offer(url, bodies, rate=rate))
    kernel = {name: n - kernel.get(name, 0) for name, n in _tcp_counters().items()}
    kinds = Counter(kind for kind, _ in outcomes)
    answered = sum(n for kind, n in kinds.items() if kind.startswith("2"))
    # A webhook without a bound is still writing what its senders gave up
    # on: count once the number stops moving.
    written, seen_at = -1, time.perf_counter()
    deadline = seen_at + 180
    while time.perf_counter() - seen_at < 3 and time.perf_counter() < deadline:
        now = len(list_incidents(rig, namespace, MEASURED_ONLY))
        if now != written:
            written, seen_at = now, time.perf_counter()
        time.sleep(0.5)
    shed = metric_sum(f"{url}/metrics", "incident_ingest_shed_total")

    def latency(kind: str | None, q: float) -> float | None:
        values = [s for k, s in outcomes if kind is None or k.startswith(kind)]
        return round(quantile(values, q) * 1000, 1) if values else None

    return {
        "alarms": count,
        "max_in_flight": int(os.environ.get("INGEST_MAX_IN_FLIGHT", "0")) or "default",
        "offered_per_s": round(offered, 1),
        "answered_2xx": answered,
        "answered_2xx_per_s": round(answered / elapsed, 1),
        "seconds_to_last_answer": round(elapsed, 1),
        "answered_503": kinds["503"],
        "resets": kinds["reset"],
        "other": {kind: n for kind, n in kinds.items() if kind not in ("503", "reset")
                  and not kind.startswith("2")},
        "shed_counted_by_webhook": shed,
        # Every alarm answered 2xx is an Incident, and nothing else is.
        "incidents_written": written,
        "exact": written == answered,
        "latency_2xx_p50_ms": latency("2", 0.5),
        "latency_2xx_p99_ms": latency("2", 0.99),
        "latency_503_p50_ms": latency("503", 0.5),
        "latency_503_p99_ms": latency("503", 0.99),
        "latency_all_p50_ms": latency(None, 0.5),
        "latency_all_p99_ms": latency(None, 0.99),
        "cpu_ms_per_alarm_offered": measured.cpu_ms,
        "load_average_at_start": round(load, 2),
        # The kernel's TCP counters over the run (the network namespace's,
        # so other work on the machine shows too): accept queue overflows,
        # and resets sent for data that arrived at a closed socket.
        "kernel_tcp": kernel,
        # Connections the kernel had completed and the webhook not yet
        # accepted, the most seen (sampled every 50 ms), and the queue's size.
        "accept_queue_max": queue.deepest,
        "accept_queue_size": queue.size,
    }  # fmt: skip


class AcceptQueue:
    """Samples the accept queue of the socket listening on `port`, in a thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.deepest = 0
        self.size: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> AcceptQueue:
        # ss shows a listening socket's queue size as its Send-Q.
        listed = subprocess.run(
            ["ss", "-Hltn", f"sport = :{self.port}"], capture_output=True, text=True
        ).stdout.split()
        self.size = int(listed[2]) if len(listed) > 2 else None
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                fields = line.split()
                # A listening socket (state 0A) shows in rx_queue the
                # connections waiting to be accepted.
                if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == self.port:
                    waiting = int(fields[4].split(":")[1], 16)
                    self.deepest = max(self.deepest, waiting)


def _tcp_counters() -> dict[str, int]:
    """ListenOverflows, ListenDrops, TCPAbortOnData, TCPAbortOnClose, OutRsts so far."""
    wanted = {"ListenOverflows", "ListenDrops", "TCPAbortOnData", "TCPAbortOnClose", "OutRsts"}
    found: dict[str, int] = {}
    for table in ("/proc/net/netstat", "/proc/net/snmp"):
        lines = Path(table).read_text().splitlines()
        # Pairs of lines: "Prefix: names..." then "Prefix: values...".
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            for name, value in zip(names.split()[1:], values.split()[1:], strict=False):
                if name in wanted:
                    found[name] = int(value)
    return found


def bench_end_to_end(rig: Rig, *, count: int, services: int, concurrency: int) -> dict[str, Any]:
    say(f"end to end: {count} Incidents over {services} ECS services, rules assessor, moto")
    namespace = rig.namespace("bench-e2e")
    ecs = rig.session.client("ecs", endpoint_url=rig.aws)
    ecs.create_cluster(clusterName="bench")
    os.environ["MOTO_ECS_SERVICE_RUNNING"] = "2"  # moto (in this process): rollouts complete
    for index in range(services):
        ecs.register_task_definition(
            family=f"e2e-{index}",
            containerDefinitions=[{"name": "app", "image": "nginx", "memory": 128}],
        )
        ecs.create_service(
            cluster="bench",
            serviceName=f"e2e-{index}",
            taskDefinition=f"e2e-{index}",
            desiredCount=2,
        )
    os.environ.pop("MOTO_ECS_SERVICE_RUNNING")
    rig.objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "responsepolicies",
        {"apiVersion": API_VERSION, "kind": "ResponsePolicy", "metadata": {"name": "restart"},
         "spec": {"match": {"services": ["e2e-*"]},
                  "rules": [{"action": "restart_service"}],
                  "approval": {"requiredFor": []},
                  "remediation": {"cooldownSeconds": 0, "maxPerHour": 100}}},
    )  # fmt: skip
    url = rig.webhook(namespace)
    rig.operator(namespace)
    before = rig.requests()
    bodies = [alert(f"e2e-{i % services}", f"e2e-{i}", "high") for i in range(count)]
    started = time.perf_counter()
    asyncio.run(post_all(url, bodies, concurrency))

    def all_terminal() -> bool:
        phases = [i.get("status", {}).get("phase") for i in list_incidents(rig, namespace)]
        return sum(p in ("Resolved", "Escalated", "Ignored", "Failed") for p in phases) == count

    wait_for(f"{count} Incidents to reach a terminal phase", all_terminal, timeout=600)
    elapsed = time.perf_counter() - started
    time.sleep(3)  # let the last Events and timeline entries land
    after = rig.requests()
    items = list_incidents(rig, namespace)
    to_action, to_terminal = [], []
    for item in items:
        status = item["status"]
        # firstSeen: when the webhook counted the alarm (microseconds);
        # creationTimestamp has only seconds.
        received = timestamp(status.get("firstSeen") or item["metadata"]["creationTimestamp"])
        if status.get("remediation", {}).get("startedAt"):
            to_action.append(timestamp(status["remediation"]["startedAt"]) - received)
        to_terminal.append(timestamp(status["lastTransition"]["at"]) - received)
    phases = Counter(item["status"]["phase"] for item in items)
    delta = after - before
    per_incident = {
        f"{verb} {resource}{'/' + sub if sub else ''}": round(n / count, 2)
        for (verb, resource, sub), n in sorted(delta.items())
        if resource in ("incidents", "events") and n
    }
    incident_writes = sum(
        n for (verb, resource, _), n in delta.items()
        if resource == "incidents" and verb in ("POST", "PATCH", "PUT", "APPLY", "CREATE", "UPDATE")
    )  # fmt: skip
    return {
        "incidents": count,
        "phases": dict(phases),
        "incidents_per_s": round(count / elapsed, 1),
        "created_to_remediation_started_p50_s": round(statistics.median(to_action), 3),
        "created_to_remediation_started_p99_s": round(quantile(to_action, 0.99), 3),
        "created_to_terminal_p50_s": round(statistics.median(to_terminal), 3),
        "created_to_terminal_p99_s": round(quantile(to_terminal, 0.99), 3),
        "api_requests_per_incident": per_incident,
        "writes_to_incident_per_incident": round(incident_writes / count, 2),
        "events_created_per_incident": round(
            sum(n for (v, r, _), n in delta.items() if r == "events" and v == "POST") / count, 2
        ),
    }


def bench_memory(rig: Rig, *, count: int) -> dict[str, Any]:
    """Two startups with `count` Incidents present: all new (the worst case:
    every one needs its passes), then a restart among the same Incidents, now
    finished (the usual case: most Incidents in a cluster are history, and
    the operator only re-publishes their last transition, idempotently).

    Progress is read from the operator's own /metrics (its census of the
    watch, by phase, and its queue) every 3 s: a list of 20,000 Incidents
    every 0.1 s, as this section did with 5,000, costs the API server and
    this process more CPU than the operator gets, and each scrape costs the
    operator about 0.15 s with 20,000 (every 0.5 s was a quarter of its
    CPU). One list at the end checks what the census said.
    """
    say(f"memory: {count} Incidents present, then the operator starts and handles them all")
    namespace = rig.namespace("bench-memory")
    raw_creates(rig, namespace, count, 16)
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    started = time.perf_counter()
    process = rig.operator(namespace, port=port)
    up = time.perf_counter() - started
    # Every Incident has a phase once the census holds them all, none Triggered.
    handled = _until(metrics, lambda c: c["total"] == count and not c["Triggered"],
                     timeout=count * 0.2 + 300) - started  # fmt: skip
    at_handled = memory_mb(process)
    # Low-severity raw Incidents end Ignored (rules assessor): two passes each.
    finished = _until(metrics, lambda c: c["Ignored"] == count, timeout=count * 0.4 + 600) - started
    cpu = process_cpu_seconds(process.pid) or 0.0
    time.sleep(5)
    at_finished = memory_mb(process)
    phases = Counter((i.get("status") or {}).get("phase") for i in list_incidents(rig, namespace))
    process.terminate()
    process.wait(timeout=30)

    say(f"memory: the operator restarts among {count} finished Incidents")
    before = _events_posted(rig)
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    started = time.perf_counter()
    process = rig.operator(namespace, port=port)
    # Idle: every Incident seen by the watch and none waiting for a pass.
    idle = _until(metrics, lambda c: c["total"] == count and not c["queued"],
                  timeout=count * 0.2 + 300) - started  # fmt: skip
    restart_cpu = process_cpu_seconds(process.pid) or 0.0
    time.sleep(5)
    after_restart = memory_mb(process)
    return {
        "incidents": count,
        "operator_up_in_s": round(up, 1),
        "handled_in_s": round(handled, 1),
        "operator_rss_mb": at_handled["rss"],
        "finished_in_s": round(finished, 1),
        "finished_per_s": round(count / finished, 1),
        "phases": {str(phase): n for phase, n in phases.items()},
        "every_incident_handled": phases == Counter({"Ignored": count}),
        "operator_cpu_s": round(cpu, 1),
        "operator_cpu_ms_per_incident": round(cpu / count * 1000, 2),
        "operator_rss_finished_mb": at_finished["rss"],
        "operator_peak_rss_mb": at_finished["peak"],
        "restart_idle_in_s": round(idle, 1),
        "restart_cpu_s": round(restart_cpu, 1),
        "restart_events_posted": _events_posted(rig) - before,
        "restart_rss_mb": after_restart["rss"],
        "restart_peak_rss_mb": after_restart["peak"],
    }


def _until(metrics: str, done: Callable[[Counter[str]], bool], *, timeout: float) -> float:
    """perf_counter() when `done(census)` first held, the census read from the
    operator's /metrics every 3 s: Incidents by phase, their `total`, and
    `queued` (its reconcile queue's depth)."""
    deadline = time.perf_counter() + timeout
    census: Counter[str] = Counter()
    while time.perf_counter() < deadline:
        try:
            text = httpx.get(metrics, timeout=10).text
        except httpx.TransportError:
            text = ""
        census = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "incident_operator_incidents":
                    census[sample.labels["phase"]] += int(sample.value)
                    census["total"] += int(sample.value)
                elif sample.name == "incident_operator_reconcile_queue_depth":
                    census["queued"] = int(sample.value)
        if text and done(census):
            return time.perf_counter()
        time.sleep(3)
    raise TimeoutError(f"gave up after {timeout:.0f} s; the operator's census: {dict(census)}")


def bench_ui(rig: Rig, *, count: int, requests: int = 50) -> dict[str, Any]:
    """The web UI with `count` Incidents: how long a person waits for each page.

    Sequential requests, one at a time, after one to warm up; the list shows
    the newest 200 of what matches, so its time is the filtering and sorting
    of all `count` plus the rendering of 200 rows.
    """
    say(f"ui: {count} Incidents; the list, a filtered list and analytics, {requests} times each")
    namespace = rig.namespace("bench-ui")
    severities = ["critical", "high", "medium", "low", "info"]
    objects = [
        {
            "apiVersion": API_VERSION,
            "kind": "Incident",
            "metadata": {"name": f"ui-{i}"},
            "spec": {
                "source": "generic", "fingerprint": f"ui-{i}",
                "title": f"svc-{i % 50} is failing", "summary": f"alarm {i} of the bench",
                "severity": severities[i % 5], "service": {"name": f"svc-{i % 50}"},
                "alarm": {"name": f"alarm-{i % 200}"},
            },
        }
        for i in range(count)
    ]  # fmt: skip
    raw_creates(rig, namespace, count, 16, objects)
    port = free_port()
    process = rig.spawn(
        "ui", namespace, "ui", "--host", "127.0.0.1", "--port", str(port), "--namespace", namespace
    )
    url = f"http://127.0.0.1:{port}"
    wait_for("the UI", lambda: answers_200(f"{url}/readyz"), timeout=60)
    pages = {
        "list": "/",
        "list_filtered": "/?severity=high&q=svc-7",
        "rows": "/rows",
        "analytics_30d": "/analytics?days=30",
    }
    figures: dict[str, Any] = {"incidents": count}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        wait_for(
            f"the UI to hold {count} Incidents",
            lambda: f'data-total="{count}"' in http.get("/rows").text,
            timeout=120,
        )
        for name, path in pages.items():
            http.get(path).raise_for_status()
            took = []
            for _ in range(requests):
                started = time.perf_counter()
                http.get(path).raise_for_status()
                took.append(time.perf_counter() - started)
            figures[f"{name}_p50_ms"] = round(quantile(took, 0.5) * 1000, 1)
            figures[f"{name}_p99_ms"] = round(quantile(took, 0.99) * 1000, 1)
    figures["ui_rss_mb"] = memory_mb(process)["rss"]
    process.terminate()
    process.wait(timeout=30)
    return figures


def _events_posted(rig: Rig) -> int:
    return rig.requests()[("POST", "events", "")]


def machine() -> dict[str, Any]:
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


SECTIONS = [
    "ingest", "storm", "open_storm", "overload", "end_to_end", "alarm_to_action", "memory", "ui",
    "evidence",
]  # fmt: skip
# Sections with a moto of their own, which need neither the control plane nor the processes.
WITHOUT_RIG = {"evidence"}


def with_rig(rig: Rig, wanted: set[str], scale: float, results: dict[str, Any]) -> None:
    """The sections that run against the control plane, moto and the product's processes."""
    try:
        # Warm the API server up (first requests, empty caches) before any
        # figure is taken, then measure the baseline.
        raw_creates(rig, rig.namespace("bench-warm-up"), WARM_UP, 16)
        if wanted & {"ingest", "storm"}:
            raw = raw_creates(rig, rig.namespace("bench-raw"), int(2000 * scale), 16)
        if "ingest" in wanted:
            results["ingest"] = bench_ingest(rig, count=int(2000 * scale), concurrency=16, raw=raw)
        if "storm" in wanted:
            results["storm"] = bench_storm(
                rig, count=int(10_000 * scale), fingerprints=20, concurrency=50, raw=raw
            )
        if "open_storm" in wanted:
            # The figure (1,000/s for 10 s), then the sweep around it.
            rates = (1000, 250, 500, 2000)
            sweep = {
                rate: bench_storm_open_loop(
                    rig, rate=rate, seconds=max(1.0, 10 * scale), fingerprints=20
                )
                for rate in rates
            }
            results["open_storm"] = {
                "at_1000_per_s": sweep[1000],
                "sweep": {str(rate): sweep[rate] for rate in rates[1:]},
                "keeps_up_to_per_s": max(
                    (rate for rate in rates if sweep[rate]["kept_up"]), default=None
                ),
            }
        if "overload" in wanted:
            # The figure: 2,000 alarms/s offered to one webhook.
            results["overload"] = bench_overload(rig, rate=2000, seconds=max(1.0, 10 * scale))
        if "end_to_end" in wanted:
            results["end_to_end"] = bench_end_to_end(
                rig, count=int(200 * scale) or 10, services=10, concurrency=20
            )
        if "alarm_to_action" in wanted:
            # The figure: 20 new alarms/s for 60 s, p99 to the restart
            # under 2 s; then a rate this machine keeps up with, for the
            # latency of an Incident that does not wait behind others.
            results["alarm_to_action"] = {
                f"at_{rate:g}_per_s": bench_alarm_to_action(
                    rig, rate=rate, seconds=max(5.0, 60 * scale), services=100
                )
                for rate in (20, 4)
            }
        if "memory" in wanted:
            # The figure: RSS under 300 MB with 20,000 Incidents, every one handled.
            results["memory"] = bench_memory(rig, count=int(20_000 * scale))
        if "ui" in wanted:
            # The figure: the list in under 200 ms with 5,000 Incidents.
            results["ui"] = bench_ui(rig, count=int(5000 * scale))
    finally:
        rig.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only these (repeatable); default: all",
    )
    args = parser.parse_args()
    wanted = set(args.only or SECTIONS)
    scale = 0.05 if args.quick else 1.0
    workdir = Path(os.environ.get("BENCH_WORKDIR", "/tmp/incident-bench"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine": machine(), "started": datetime.now().isoformat()}
    if wanted - WITHOUT_RIG:
        say(f"process logs in {workdir}")
        with_rig(Rig(workdir), wanted, scale, results)
    if "evidence" in wanted:
        say("evidence: gathering from moto")
        results["evidence"] = bench_evidence(runs=max(5, int(100 * scale)))
    print(json.dumps(results, indent=2))
    print(table(results), file=sys.stderr)
    return 0


def table(results: dict[str, Any]) -> str:
    rows = []
    for section in SECTIONS:
        for key, value in _flat(results.get(section, {})):
            rows.append(f"{section:<15} {key:<40} {json.dumps(value)}")
    return "\n".join(rows)


def _flat(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(key, value) rows; a dict that holds dicts (one run of a sweep, say) as
    rows of its own, its keys after a dot."""
    rows: list[tuple[str, Any]] = []
    for key, value in figures.items():
        if isinstance(value, dict) and any(isinstance(inner, dict) for inner in value.values()):
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


if __name__ == "__main__":
    sys.exit(main())
