"""Crash points: die by SIGKILL at a named line, for fault-injection tests.

The operator promises to survive being killed anywhere. Tests keep it honest
by killing it exactly where it hurts most (between an ECS call and the status
patch that records it, say), which a SIGKILL sent from outside can only hit
by luck. Off unless INCIDENT_OPERATOR_CRASH_AT is set:

    INCIDENT_OPERATOR_CRASH_AT=after-act,after-write:2
    INCIDENT_OPERATOR_CRASH_LOG=/tmp/crashes   # counts hits across restarts

`name:N` crashes on the first N hits (default 1); the log file remembers hits
across the restarts the crashes cause. The points: `before-write` and
`after-write` (a pass's status write, reconcile/reconciler.py),
`after-page` and `after-webhook` (PagerDuty or a webhook receiver took an
event, not yet recorded: notify/pagerduty.py, notify/webhooks.py), `after-claim`
and `after-act` (an action claimed, and done but not yet recorded,
remediate/executor.py).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def crash_point(name: str) -> None:
    spec = os.environ.get("INCIDENT_OPERATOR_CRASH_AT")
    if not spec:
        return
    wanted = dict(
        (part.split(":", 1)[0], int(part.split(":", 1)[1]) if ":" in part else 1)
        for part in spec.split(",")
        if part
    )
    if name not in wanted:
        return
    log = Path(os.environ.get("INCIDENT_OPERATOR_CRASH_LOG", "/tmp/incident-operator-crashes"))
    hits = log.read_text().split().count(name) if log.exists() else 0
    if hits >= wanted[name]:
        return
    with log.open("a") as file:
        file.write(f"{name}\n")
    os.kill(os.getpid(), signal.SIGKILL)
