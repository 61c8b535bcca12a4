"""`incident-operator dev` and `make demo`, as a newcomer runs them."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from incident_operator.devstack.binaries import ensure_binaries
from incident_operator.devstack.controlplane import free_port
from operator_support import wait_for


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces.
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = shlex.split(value)[0]
    return values


def test_dev_stack_serves_writes_env_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / ".dev"
    dev = subprocess.Popen(
        [sys.executable, "-m", "incident_operator.cli", "dev", "--port", str(port),
         "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        wait_for("the dev stack's env file", lambda: (state / "env").exists(), timeout=120)
        env = read_env(state / "env")
        assert env["INCIDENT_WEBHOOK_URL"] == f"http://127.0.0.1:{port}"
        assert Path(env["KUBECONFIG"]).exists()
        assert env["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        answer = httpx.post(
            f"{env['INCIDENT_WEBHOOK_URL']}/alert",
            json={"detail": {"service_name": "search", "cluster_name": "demo",
                             "summary": "p99 above 2s", "severity": "medium"}},
            headers={"Authorization": f"Bearer {env['INCIDENT_WEBHOOK_TOKEN']}"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        name = answer.json()["incidents"][0]["name"]
        kubectl_env = {**os.environ, "KUBECONFIG": env["KUBECONFIG"]}
        kubectl = str(ensure_binaries(log=False).kubectl)

        def escalated() -> bool:
            out = subprocess.run(
                [kubectl, "get", "incident", name, "-o", "jsonpath={.status.phase}"],
                env=kubectl_env, capture_output=True, text=True,
            ).stdout  # fmt: skip
            return out == "Escalated"

        wait_for(f"{name} to be escalated (medium -> notify_team)", escalated, timeout=30)
        # The operator's metrics, where .dev/env says they are.
        scraped = httpx.get(env["INCIDENT_OPERATOR_METRICS_URL"]).text
        assert "incident_operator_leader 1.0" in scraped
        assert (
            'incident_operator_incidents{phase="Escalated",service="search",severity="medium"} 1.0'
            in scraped
        )
        # The dashboard, where .dev/env says, behind its own token, showing it.
        assert httpx.get(env["INCIDENT_UI_URL"]).status_code == 401
        page = httpx.get(
            env["INCIDENT_UI_URL"], headers={"Authorization": f"Bearer {env['INCIDENT_UI_TOKEN']}"}
        )
        assert page.status_code == 200 and name in page.text
        children = descendants(dev.pid)
        assert len(children) >= 5  # etcd, kube-apiserver, operator, webhook, ui
    finally:
        dev.send_signal(signal.SIGTERM)
        output, _ = dev.communicate(timeout=60)
    assert dev.returncode == 0, output
    assert "incident-operator dev stack is up" in output
    assert f"  ui          {env['INCIDENT_UI_URL']}" in output
    time.sleep(0.5)
    assert [pid for pid in children if alive(pid)] == []


def test_dev_restarts_its_operator_when_it_is_killed(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / ".dev"
    dev = subprocess.Popen(
        [sys.executable, "-m", "incident_operator.cli", "dev", "--port", str(port),
         "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    pid_file = state / "operator.pid"
    try:
        wait_for("the dev stack's env file", lambda: (state / "env").exists(), timeout=120)
        env = read_env(state / "env")
        first = int(pid_file.read_text())
        assert first in descendants(dev.pid)
        assert b"incident_operator.cli\0run" in Path(f"/proc/{first}/cmdline").read_bytes()
        os.kill(first, signal.SIGKILL)  # a crash, as `kill -9` by hand

        def restarted() -> int | None:
            assert dev.poll() is None, "dev stopped when its operator died"
            pid = int(pid_file.read_text()) if pid_file.exists() else first
            return pid if pid != first and alive(pid) else None

        second = wait_for("a new operator", restarted, timeout=60)
        assert not alive(first) and second in descendants(dev.pid)
        # The new operator handles the next alarm.
        answer = httpx.post(
            f"{env['INCIDENT_WEBHOOK_URL']}/alert",
            json={"detail": {"service_name": "search", "cluster_name": "demo",
                             "summary": "p99 above 2s", "severity": "medium"}},
            headers={"Authorization": f"Bearer {env['INCIDENT_WEBHOOK_TOKEN']}"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        name = answer.json()["incidents"][0]["name"]
        kubectl = str(ensure_binaries(log=False).kubectl)
        kubectl_env = {**os.environ, "KUBECONFIG": env["KUBECONFIG"]}

        def escalated() -> bool:
            out = subprocess.run(
                [kubectl, "get", "incident", name, "-o", "jsonpath={.status.phase}"],
                env=kubectl_env, capture_output=True, text=True,
            ).stdout  # fmt: skip
            return out == "Escalated"

        wait_for(f"{name} to be escalated by the new operator", escalated, timeout=30)
        children = descendants(dev.pid)
    finally:
        dev.send_signal(signal.SIGTERM)
        output, _ = dev.communicate(timeout=60)
    assert dev.returncode == 0, output
    # Its exports go with it: a second shell must not talk to a stack that is gone.
    assert not (state / "env").exists()
    assert f"operator (pid {first}) was killed by SIGKILL; restarting it in 1s" in output
    assert f"operator running, pid {second}" in output
    time.sleep(0.5)
    assert [pid for pid in children if alive(pid)] == []
    assert not pid_file.exists()


def test_make_demo_runs_the_five_alarms(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "incident_operator.devstack.demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / ".dev" / "env").exists()  # the demo's stack is gone, so are its exports
    table = result.stdout.split("$ kubectl get incidents", 1)[1].split("$ incident-operator")[0]
    phases = {
        line.split()[0].split("-")[0]: line.split()[3] for line in table.strip().splitlines()[1:]
    }
    assert phases == {
        "checkout": "Resolved", "payments": "Escalated", "search": "Resolved",
        "orders": "Resolved", "inventory": "Escalated",
    }  # fmt: skip
    # The storm of twelve inventory alerts is one Incident holding them.
    alerts = {
        line.split()[0].split("-")[0]: line.split()[-3] for line in table.strip().splitlines()[1:]
    }
    assert table.split()[8] == "ALERTS"
    assert alerts == {
        "checkout": "1", "payments": "1", "search": "1", "orders": "1", "inventory": "12"
    }  # fmt: skip
    # What came of each action is a column: search was resolved without its restart.
    outcomes = {
        line.split()[0].split("-")[0]: line.split()[6] for line in table.strip().splitlines()[1:]
    }
    assert table.split()[6] == "OUTCOME"
    assert outcomes["checkout"] == "RestartSucceeded"
    assert outcomes["search"] == "NotNeeded"
    assert outcomes["orders"] == "RollbackSucceeded"
    assert "resolved by the restart of us-east-1/demo/checkout" in result.stdout
    # orders was deployed twice; its alarm's answer took it back to the first.
    assert "resolved by the rollback of us-east-1/demo/orders" in result.stdout
    assert "orders runs orders:1 again" in result.stderr
    assert "the dashboard, live while the demo runs: http://127.0.0.1:" in result.stderr
