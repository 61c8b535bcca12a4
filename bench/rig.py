"""What the benchmarks share: the rig (control plane, moto, the product's
processes), CPU and memory readings, the open-loop sender, and small
helpers for figures. The sections are in `__main__.py` and their own
modules.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import httpx
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

from incident_operator.crd import all_crds
from incident_operator.devstack.controlplane import ControlPlane, _die_with_parent, free_port
from incident_operator.devstack.moto import start_moto
from incident_operator.devstack.waiting import wait_for
from incident_operator.models import GROUP, VERSION
from incident_operator.timeline.dynamodb import create_table

REGION = "us-east-1"
TOKEN = uuid.uuid4().hex
# Requests sent before a measurement starts: connections open, caches warm.
WARM_UP = 200
# Leaves the webhook's warm-up alarms out of what a benchmark counts.
MEASURED_ONLY = f"{GROUP}/service!=warm-up"


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Rig:
    """The control plane, moto, and helpers to start the product's processes."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.plane = ControlPlane.start()
        self.api = config.new_client_from_config(config_file=str(self.plane.kubeconfig))
        self.objects = client.CustomObjectsApi(self.api)
        extensions = client.ApiextensionsV1Api(self.api)
        for definition in all_crds():
            extensions.create_custom_resource_definition(definition)
        time.sleep(2)  # let the CRDs be established and served
        self.moto, self.aws, _ = start_moto()
        self.session = boto3.session.Session(
            aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION
        )
        create_table(self.session.client("dynamodb", endpoint_url=self.aws), "timeline")
        self.processes: list[subprocess.Popen[bytes]] = []
        # Whose CPU time a measurement reports (the webhook joins when started).
        self.measured = {Path(p.args[0]).name: p.pid for p in self.plane.processes}

    def env(self, namespace: str) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.plane.kubeconfig),
            "AWS_ENDPOINT_URL": self.aws,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "TIMELINE_TABLE": "timeline",
            "ECS_CLUSTER_NAME": "bench",
            "INCIDENT_NAMESPACE": namespace,
            "INGEST_TOKENS": TOKEN,
            "UI_TOKENS": TOKEN,
            "GEMINI_API_KEY": "",
        }

    def spawn(
        self, name: str, namespace: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`incident-operator ARGS...` with the rig's environment, and `env` over it."""
        with (self.workdir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "incident_operator.cli", *args],
                env={**self.env(namespace), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.processes.append(process)
        return process

    def webhook(self, namespace: str) -> str:
        port = free_port()
        self.spawn("webhook", namespace, "webhook", "--host", "127.0.0.1", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        wait_for("the webhook", lambda: answers_200(f"{url}/readyz"), timeout=60)
        self.measured["webhook"] = self.processes[-1].pid
        return url

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each measured process and by this one
        (the bench client; moto runs here too, idle while alarms are posted)."""
        used = {name: process_cpu_seconds(pid) for name, pid in self.measured.items()}
        used = {name: seconds for name, seconds in used.items() if seconds is not None}
        mine = resource.getrusage(resource.RUSAGE_SELF)
        return {**used, "client": mine.ru_utime + mine.ru_stime}

    def idle_cpu_ms_per_s(self, seconds: float = 10.0) -> dict[str, float]:
        """CPU milliseconds each measured process spends per second while
        nothing is sent (the control plane's own work: controllers, leases)."""
        before = self.cpu_seconds()
        time.sleep(seconds)
        after = self.cpu_seconds()
        return {
            name: round((after[name] - before[name]) / seconds * 1000, 1)
            for name in after
            if name != "client" and name in before
        }

    def operator(
        self, namespace: str, *, port: int | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """The operator, watching `namespace`; its /healthz and /metrics on `port`."""
        port = port or free_port()
        process = self.spawn(
            "operator", namespace, "run", "-n", namespace,
            "--liveness", f"http://127.0.0.1:{port}/healthz", env=env,
        )  # fmt: skip
        wait_for(
            "the operator", lambda: answers_200(f"http://127.0.0.1:{port}/healthz"), timeout=60
        )
        return process

    def namespace(self, name: str) -> str:
        client.CoreV1Api(self.api).create_namespace({"metadata": {"name": name}})
        return name

    def requests(self) -> Counter[tuple[str, str, str]]:
        """apiserver_request_total by (verb, resource, subresource), counted by the server."""
        text = self.plane_get("/metrics")
        counts: Counter[tuple[str, str, str]] = Counter()
        for family in text_string_to_metric_families(text):
            if family.name != "apiserver_request":
                continue
            for sample in family.samples:
                if sample.name != "apiserver_request_total":
                    continue
                labels = sample.labels
                key = (labels["verb"], labels.get("resource", ""), labels.get("subresource", ""))
                counts[key] += int(sample.value)
        return counts

    def plane_get(self, path: str) -> str:
        answer = httpx.get(
            f"{self.plane.url}{path}",
            headers={"Authorization": f"Bearer {self.plane.token}"},
            verify=False,
            timeout=30,
        )
        answer.raise_for_status()
        return answer.text

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    # A webhook still working off an overload's backlog.
                    process.kill()
                    process.wait()
        self.moto.stop()
        self.plane.stop()


def process_cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of a process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # Fields 14 and 15 of /proc/PID/stat, after the command's parentheses: in ticks.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Measured:
    """Items per second, and CPU milliseconds per item by process, of a block."""

    def __init__(self, rig: Rig, items: int) -> None:
        self.rig, self.items = rig, items
        self.rate = 0.0
        self.cpu_ms: dict[str, float] = {}

    def __enter__(self) -> Measured:
        self._cpu = self.rig.cpu_seconds()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._started
        after = self.rig.cpu_seconds()
        self.rate = self.items / elapsed
        used = {name: after[name] - self._cpu.get(name, after[name]) for name in after}
        # A process that did nothing here (the webhook during raw creates) is left out.
        self.cpu_ms = {
            name: round(seconds / self.items * 1000, 2) for name, seconds in used.items() if seconds
        }
        self.cpu_ms["total"] = round(sum(self.cpu_ms.values()), 2)


def answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def alert(service: str, incident_id: str, severity: str = "medium") -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "detail": {
            "service_name": service,
            "cluster_name": "bench",
            "summary": f"{service} is failing",
            "severity": severity,
        },
    }


def list_incidents(rig: Rig, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    found = rig.objects.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "incidents", label_selector=selector
    )
    return list(found["items"])


async def offer(
    url: str,
    bodies: list[dict[str, Any]],
    *,
    rate: float,
    connections: int = 1024,
    timeout: float = 30.0,
    sent: list[float] | None = None,
) -> tuple[float, float, list[tuple[str, float]]]:
    """POST the bodies to /alert at `rate` a second, open loop: each leaves on
    time whatever became of the earlier ones, as independent senders do.

    Returns the rate actually offered (the client shares the cores: it may
    fall behind), the seconds until the last answer, and, per request, what
    came back and after how long (from when it was started, which is when it
    was due unless the client fell behind; then `offered` is short): the
    status code, or `reset` (the connection was reset or closed without an
    answer), `timeout`, `connect` (it could not connect) or the error's name.
    `sent`, if given, is filled with each body's wall-clock send time (epoch
    seconds), in the bodies' order.
    """
    # Up to `connections` open at once, as a fleet of senders with pools of
    # their own would have: far more than the webhook takes at once, so the
    # loop stays open while the webhook answers, and the client does not
    # open new connections without end (each costs it more CPU than a
    # request) once it stops answering.
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    outcomes: list[tuple[str, float]] = []

    async def one(http: aiohttp.ClientSession, body: dict[str, Any], index: int) -> None:
        started = time.perf_counter()
        if sent is not None:
            sent[index] = time.time()
        try:
            async with http.post("/alert", json=body) as answer:
                await answer.read()
                outcome = str(answer.status)
        except (aiohttp.ServerDisconnectedError, ConnectionResetError):
            outcome = "reset"
        except aiohttp.ClientConnectorError:
            outcome = "connect"
        except aiohttp.ClientOSError as error:
            outcome = "reset" if error.errno == errno.ECONNRESET else type(error).__name__
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError as error:
            outcome = type(error).__name__
        outcomes.append((outcome, time.perf_counter() - started))

    async with aiohttp.ClientSession(
        base_url=url,
        headers=headers,
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as http:
        tasks = []
        if sent is not None:
            sent[:] = [0.0] * len(bodies)
        started = time.perf_counter()
        for index, body in enumerate(bodies):
            due = started + index / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(http, body, index)))
        offered = len(bodies) / (time.perf_counter() - started)
        await asyncio.gather(*tasks)
    return offered, time.perf_counter() - started, outcomes


def metric_sum(url: str, name: str) -> float | None:
    """The sum of a metric's samples on a /metrics page; None when it has none."""
    try:
        text = httpx.get(url, timeout=60).text
    except httpx.TransportError:
        return None
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
    return sum(values) if values else None


def memory_mb(process: subprocess.Popen[bytes]) -> dict[str, float]:
    status = Path(f"/proc/{process.pid}/status").read_text()
    fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if "kB" in line}
    return {
        "rss": round(int(fields["VmRSS"]) / 1024, 1),
        "peak": round(int(fields["VmHWM"]) / 1024, 1),
    }


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
