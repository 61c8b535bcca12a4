"""`make demo`: the dev stack, five sample alarms, and what became of them.

1. checkout CPU alarm (CloudWatch via EventBridge): the demo ResponsePolicy
   allows an automatic restart -> Remediating -> Resolved.
2. payments error rate (Alertmanager): the policy sends everything to a human
   -> Escalated.
3. search latency (Alertmanager): a restart would need approval; the alert
   resolves before anyone decides -> Resolved, nothing restarted.
4. orders 5xx errors (CloudWatch via EventBridge), after orders was deployed
   twice (orders:1, then orders:2): the policy rolls the latest deployment
   back -> Remediating -> Resolved, orders runs orders:1 again.
5. a storm of twelve inventory alerts (Alertmanager): the policy groups them by
   service -> one Incident holding twelve alerts, escalated once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml
from kubernetes import client

from ..models import GROUP, VERSION
from .controlplane import free_port
from .stack import CLUSTER, REGION, DevStack, running, say
from .waiting import wait_for

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def main() -> int:
    started = time.monotonic()
    with running(port=free_port(), state_dir=Path(".dev")) as stack:
        objects = client.CustomObjectsApi(stack.api())
        say(f"the dashboard, live while the demo runs: {stack.ui_url} "
            f"(sign in with: {stack.ui_token})")  # fmt: skip
        apply_policies(objects, stack)
        http = httpx.Client(
            base_url=stack.webhook_url,
            headers={"Authorization": f"Bearer {stack.token}"},
            timeout=10,
        )

        checkout = send(http, "/alerts/cloudwatch", "cloudwatch-checkout-cpu.json")
        payments = send(http, "/alerts/alertmanager", "alertmanager-payments-errors.json")
        search = send(http, "/alerts/alertmanager", "alertmanager-search-latency-firing.json")
        inventory = send(http, "/alerts/alertmanager", "alertmanager-inventory-storm.json")
        orders = send(http, "/alerts/cloudwatch", "cloudwatch-orders-5xx.json")

        await_phase(objects, stack, checkout, "Resolved", "checkout to be restarted and resolved")
        await_phase(objects, stack, payments, "Escalated", "payments to be escalated to a human")
        await_phase(
            objects, stack, inventory, "Escalated", "the inventory storm to be escalated once"
        )
        await_phase(objects, stack, search, "AwaitingApproval", "search to ask for approval")
        await_phase(objects, stack, orders, "Resolved", "orders to be rolled back and resolved")
        say(f"orders runs {task_definition(stack, 'orders')} again")
        say("search recovers on its own before anyone approves:")
        send(http, "/alerts/alertmanager", "alertmanager-search-latency-resolved.json")
        await_phase(objects, stack, search, "Resolved", "search to be resolved without a restart")

        print("\n$ kubectl get incidents", flush=True)
        show(stack, ["kubectl", "get", "incidents", "-n", stack.namespace])
        for name in (checkout, orders):
            print(f"\n$ incident-operator timeline {name}", flush=True)
            show(
                stack,
                [sys.executable, "-m", "incident_operator.cli", "timeline", name,
                 "-n", stack.namespace],
            )  # fmt: skip
        print(flush=True)
        say(f"the dashboard was at {stack.ui_url}; `incident-operator dev` keeps it up")
        say(f"demo finished in {time.monotonic() - started:.0f}s; stopping everything")
    return 0


def apply_policies(objects: client.CustomObjectsApi, stack: DevStack) -> None:
    for document in yaml.safe_load_all((EXAMPLES / "responsepolicies.yaml").read_text()):
        if not document:
            continue
        name = document["metadata"]["name"]
        try:
            objects.create_namespaced_custom_object(
                GROUP, VERSION, stack.namespace, "responsepolicies", document
            )
        except client.ApiException as error:
            if error.status != 409:
                raise
        say(f"ResponsePolicy {name} applied")
    # The operator learns of policies from its watch: give it a moment, so
    # the first alarm is not assessed under the default policy.
    time.sleep(1)


def send(http: httpx.Client, path: str, example: str) -> str:
    payload = json.loads((EXAMPLES / "alarms" / example).read_text())
    answer = http.post(path, json=payload)
    answer.raise_for_status()
    refs = answer.json()["incidents"]
    names = sorted({ref["name"] for ref in refs})
    outcome = refs[0]["result"] if len(refs) == 1 else f"{len(refs)} alerts into"
    say(f"POST {path} {example} -> {outcome} {', '.join(names)}")
    return str(refs[0]["name"])


def await_phase(
    objects: client.CustomObjectsApi, stack: DevStack, name: str, phase: str, what: str
) -> None:
    say(f"waiting for {what} ({name} -> {phase})")

    def current() -> Any:
        body = objects.get_namespaced_custom_object(
            GROUP, VERSION, stack.namespace, "incidents", name
        )
        return body.get("status", {}).get("phase") == phase

    wait_for(what, current, timeout=90)


def task_definition(stack: DevStack, service: str) -> str:
    """`family:revision` the service runs now, as ECS (moto) says."""
    ecs = boto3.client(
        "ecs",
        endpoint_url=stack.aws_endpoint,
        region_name=REGION,
        aws_access_key_id="dev",
        aws_secret_access_key="dev",
    )
    found = ecs.describe_services(cluster=CLUSTER, services=[service])["services"][0]
    return str(found["taskDefinition"]).rsplit("/", 1)[-1]


def show(stack: DevStack, command: list[str]) -> None:
    if command[0] == "kubectl" and stack.control_plane is not None:
        command = [str(stack.control_plane.binaries.kubectl), *command[1:]]
    env = {**os.environ, **stack.child_env(), **stack.exports()}
    subprocess.run(command, env=env, check=True)


if __name__ == "__main__":
    sys.exit(main())
