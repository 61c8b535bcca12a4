"""Two operator processes, one Lease: one acts, the other stands by and takes
over when the leader dies, is stopped, or is cut off from the API server,
without a side effect happening twice (ECS restarts counted by moto, the
timeline and the Events each once).

Short timings keep the tests quick: a 4 s lease, renewed every 0.5 s, with
a 2.5 s renew deadline (the defaults are 15, 2 and 10).
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from api_cuts import ApiServerCuts
from aws_fixtures import Aws
from incident_operator.devstack.controlplane import ControlPlane
from incident_operator.reconcile.leadership import LOST_EXIT_STATUS
from operator_support import (
    OperatorProcess,
    create_policy,
    events_for,
    get_incident,
    operator_env,
    wait_for,
)
from test_operator import AUTO_RESTART, STUCK_ROLLOUT, raise_alarm, timeline_kinds, wait_phase

pytestmark = pytest.mark.usefixtures("crds_installed")

LEASE_DURATION = 4
RENEW_DEADLINE = 2.5
RETRY_PERIOD = 0.5
FAST = ("--lease-duration", str(LEASE_DURATION), "--renew-deadline", str(RENEW_DEADLINE),
        "--retry-period", str(RETRY_PERIOD))  # fmt: skip
RESOLVED_STORY = ["received", "assessment", "action_started", "action_finished", "resolved"]
TIMED_OUT_STORY = ["received", "assessment", "action_started", "action_finished", "escalated"]


@pytest.fixture
def world(aws: Aws, api: client.ApiClient, namespace: str) -> Aws:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    # payments' rollouts never complete (no task runs): a restart stays in
    # progress until its 10 s timeout, which gives a take-over time to happen.
    aws.ecs_service(cluster="demo", service="payments", running=0)
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    create_policy(api, namespace, "payments-auto", STUCK_ROLLOUT)
    return aws


class Pair:
    """Two replicas of the operator, `a` started first so that it leads."""

    def __init__(self, a: OperatorProcess, b: OperatorProcess, api: client.ApiClient) -> None:
        self.a, self.b, self.api = a, b, api

    def start(self) -> None:
        self.a.start()
        wait_for("a to lead", lambda: self.holder() == self.a.identity, timeout=30)
        self.b.start(until="alive")
        wait_for("b to stand by", lambda: "standing by" in self.b.logs(), timeout=30)
        assert self.b.health()["leading"] is False
        assert self.holder() == self.a.identity

    def holder(self) -> str | None:
        try:
            lease = client.CoordinationV1Api(self.api).read_namespaced_lease(
                "incident-operator", self.a.namespace
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return str(lease.spec.holder_identity or "") or None

    def wait_holder(self, replica: OperatorProcess, *, timeout: float) -> float:
        """Poll the Lease until `replica` holds it; the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.holder() == replica.identity:
                return time.monotonic()
            time.sleep(0.01)
        raise AssertionError(
            f"{replica.name} did not take the Lease within {timeout}s (holder: {self.holder()})\n"
            f"{replica.logs()[-3000:]}"
        )

    def logs(self) -> str:
        return f"--- a\n{self.a.logs()[-3000:]}\n--- b\n{self.b.logs()[-3000:]}"


@pytest.fixture
def pair(
    kubeconfig: Path, namespace: str, world: Aws, tmp_path: Path, api: client.ApiClient
) -> Iterator[Pair]:
    def replica(name: str) -> OperatorProcess:
        return OperatorProcess(
            namespace=namespace, env=operator_env(kubeconfig, world), log_dir=tmp_path,
            name=name, args=FAST,
        )  # fmt: skip

    both = Pair(replica("a"), replica("b"), api)
    try:
        yield both
    finally:
        both.b.stop()
        both.a.stop()


def assert_once(
    api: client.ApiClient, aws: Aws, namespace: str, name: str, story: list[str]
) -> None:
    """One ECS restart, and every timeline entry and Event once."""
    assert aws.server.served_count("UpdateService") == 1
    assert timeline_kinds(aws, namespace, name, story) == story
    reasons = Counter(e.reason for e in events_for(api, namespace, name))
    assert max(reasons.values()) == 1, reasons


def wait_rollout_in_progress(api: client.ApiClient, namespace: str, name: str) -> None:
    def in_progress() -> bool:
        status = get_incident(api, namespace, name).get("status", {})
        return bool((status.get("remediation") or {}).get("result") == "InProgress")

    wait_for(f"{name}'s restart to be in progress", in_progress, timeout=45)


@pytest.mark.parametrize("how", ["sigkill-while-rolling-out", "crash-right-after-the-ecs-call"])
async def test_a_killed_leader_is_replaced_within_the_lease_duration(
    pair: Pair, api: client.ApiClient, namespace: str, world: Aws, tmp_path: Path, how: str
) -> None:
    if how == "crash-right-after-the-ecs-call":
        # The leader dies by SIGKILL between the ECS call and the status write
        # that records it: the hardest moment for the one who takes over.
        pair.a.env["INCIDENT_OPERATOR_CRASH_AT"] = "after-act"
        pair.a.env["INCIDENT_OPERATOR_CRASH_LOG"] = str(tmp_path / "crashes")
    pair.start()
    if how == "sigkill-while-rolling-out":
        name = await raise_alarm(api, namespace, service="payments", alarm="payments-cpu-sev2")
        wait_rollout_in_progress(api, namespace, name)
        pair.a.kill()
        dead = time.monotonic()
    else:
        name = await raise_alarm(api, namespace)
        assert pair.a.process is not None
        wait_for("a to die at its crash point", lambda: pair.a.process.poll() is not None,
                 timeout=45)  # fmt: skip
        dead = time.monotonic()
        assert pair.a.process.returncode == -signal.SIGKILL
        assert (tmp_path / "crashes").read_text().split() == ["after-act"]
    took = pair.wait_holder(pair.b, timeout=LEASE_DURATION + 5) - dead
    print(f"{how}: the standby took over {took:.2f}s after the leader died")
    # Not before the Lease expired (its last renewal was at most one retry
    # period before the death), and within its duration of it.
    assert LEASE_DURATION - RETRY_PERIOD - 0.3 <= took <= LEASE_DURATION + 1.0, pair.logs()
    if how == "sigkill-while-rolling-out":
        incident = wait_phase(api, namespace, name, "Escalated")
        assert incident["status"]["remediation"]["result"] == "TimedOut"
        assert_once(api, world, namespace, name, TIMED_OUT_STORY)
    else:
        incident = wait_phase(api, namespace, name, "Resolved")
        # b found the restart a made (the service moved on from the claimed
        # deployment) and adopted it.
        assert incident["status"]["remediation"]["receipt"] == world.primary()["id"]
        assert_once(api, world, namespace, name, RESOLVED_STORY)
    assert "took over the Lease" in pair.b.logs()


async def test_sigterm_hands_over_in_under_two_seconds(
    pair: Pair, api: client.ApiClient, namespace: str, world: Aws
) -> None:
    pair.start()
    # Stopped in the middle of a remediation: a rollout it follows, its
    # wake-up timer set.
    name = await raise_alarm(api, namespace, service="payments", alarm="payments-cpu-sev2")
    wait_rollout_in_progress(api, namespace, name)
    assert pair.a.process is not None
    pair.a.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    handover = pair.wait_holder(pair.b, timeout=10) - sent
    print(f"sigterm: the standby took over {handover:.2f}s after SIGTERM")
    assert handover < 2.0, pair.logs()
    assert pair.a.process.wait(timeout=10) == 0
    assert "released the Lease" in pair.a.logs()
    # b carries the remediation on: the rollout times out, nothing is done twice.
    incident = wait_phase(api, namespace, name, "Escalated")
    assert incident["status"]["remediation"]["result"] == "TimedOut"
    assert_once(api, world, namespace, name, TIMED_OUT_STORY)
    assert pair.b.health()["leading"] is True


async def test_a_leader_cut_off_from_the_api_server_stops_before_the_standby_starts(
    pair: Pair,
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    cuts = ApiServerCuts(control_plane.url)
    original = Path(pair.a.env["KUBECONFIG"])
    pair.a.env["KUBECONFIG"] = str(cuts.kubeconfig(original, tmp_path / "a.kubeconfig"))
    try:
        pair.start()
        name = await raise_alarm(api, namespace, service="payments", alarm="payments-cpu-sev2")
        wait_rollout_in_progress(api, namespace, name)
        cuts.cut(120)  # for good, as far as this test goes
        cut = time.monotonic()
        assert pair.a.process is not None
        wait_for("a to stop", lambda: pair.a.process.poll() is not None, timeout=RENEW_DEADLINE + 5)
        stopped = time.monotonic()
        taken = pair.wait_holder(pair.b, timeout=LEASE_DURATION + 5)
        print(f"api-cut: a stopped {stopped - cut:.2f}s after the cut, "
              f"b took over {taken - cut:.2f}s after it")  # fmt: skip
        assert pair.a.process.returncode == LOST_EXIT_STATUS
        assert "lost the Lease" in pair.a.logs()
        # a stopped acting within its renew deadline, before b could start.
        assert stopped - cut <= RENEW_DEADLINE + 0.5
        assert stopped < taken
        incident = wait_phase(api, namespace, name, "Escalated")
        assert incident["status"]["remediation"]["result"] == "TimedOut"
        assert_once(api, world, namespace, name, TIMED_OUT_STORY)
    finally:
        cuts.close()
