"""Leader election with a coordination.k8s.io/v1 Lease: one replica acts, the others stand by.

The semantics are client-go's `leaderelection` (what controller-runtime and
kube-controller-manager use), so `kubectl get lease` reads as for them:

- A standby takes the Lease when it is free (no holder: released) or when
  its record has not changed for `leaseDurationSeconds`, timed on the
  standby's own monotonic clock from when it *saw* the last change (never
  from the renewTime written in it: clocks of two nodes disagree).
- The leader renews every `retry_period`, from a thread of its own: an event
  loop busy with start-up or a storm of passes does not hold renewals back
  (it did: start-up blocked the loop for 1 to 2.5 s, which a short renew
  deadline did not survive). If no renewal has succeeded for
  `renew_deadline` (< lease duration), it stops acting: the process exits at
  once, from a thread of its own, so a busy event loop cannot delay it. The
  deadline counts from when the last successful renewal was *sent*, and a
  standby's wait from when it saw that renewal arrive, which is later: so
  the old leader is gone at least `lease_duration - renew_deadline` (5 s by
  default) before anyone else may take the Lease.
- On SIGTERM the leader stops acting first, then releases the Lease (no
  holder, duration 1 s, as client-go's ReleaseOnCancel does); a standby
  watching the Lease sees that at once and takes it.

A standby watches the one Lease (a field selector on its name) to see a
release without polling; if it may not watch, it polls every retry period.
Lease calls run on two threads of their own, so they never queue behind
the reconciler's blocking calls.

Identity: one per pod. A container restarted in the same pod (same
identity) takes its own Lease back at once: its previous process is dead,
which a restart guarantees. Two processes on one machine need two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, watch

from .. import metrics

log = logging.getLogger(__name__)

# client-go: the renew deadline must leave room for a jittered retry.
JITTER_FACTOR = 1.2
# Exit status of a leader that lost its Lease (the Deployment restarts it).
LOST_EXIT_STATUS = 3


def exit_now(reason: str) -> None:
    """Stop acting this instant: nothing this process started may go on."""
    log.critical("lost the Lease; exiting so that nothing more is done", extra={"why": reason})
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(LOST_EXIT_STATUS)


@dataclass(frozen=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str
    lease_duration: int = 15  # seconds; the Lease stores whole seconds
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("the leader election identity is empty")
        if self.retry_period <= 0:
            raise ValueError("the retry period must be positive")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"the lease duration ({self.lease_duration}s) must be longer than the renew "
                f"deadline ({self.renew_deadline:g}s): a leader must stop before another may start"
            )
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"the renew deadline ({self.renew_deadline:g}s) must be longer than "
                f"{JITTER_FACTOR} x the retry period ({self.retry_period:g}s)"
            )


@dataclass(frozen=True)
class _Record:
    """What a Lease says; a change of any of it means its holder is alive."""

    holder: str
    duration: int
    renewed: str
    transitions: int


def _record(lease: Any) -> _Record:
    spec = lease.spec
    return _Record(
        holder=spec.holder_identity or "",
        duration=spec.lease_duration_seconds or 0,
        renewed=str(spec.renew_time),
        transitions=spec.lease_transitions or 0,
    )


class LeaderElector:
    def __init__(
        self,
        *,
        api: client.ApiClient,
        config: LeaseConfig,
        on_lost: Callable[[str], None] = exit_now,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._leases = client.CoordinationV1Api(api)
        self._threads = ThreadPoolExecutor(2, thread_name_prefix="lease")
        self._on_lost = on_lost
        self._clock = clock
        # What the Lease said when last seen, and when (monotonic).
        self._observed: _Record | None = None
        self._observed_at = 0.0
        self._observing = threading.Lock()  # the watch and the attempts both look
        self._lease: Any = None  # the Lease as we last wrote it (while leading)
        self._renewed_at = 0.0  # when the last successful write of ours was sent
        self._leading = threading.Event()
        self._watching = False
        self._changed: asyncio.Event | None = None
        self._stop_watch = threading.Event()
        self._stop_renewing = threading.Event()
        # One write of the Lease at a time: a release waits for a renewal in
        # flight, then writes over the Lease that renewal returned.
        self._writing = threading.Lock()
        # Requests give up well within a retry period, so a hung connection
        # costs one attempt, not the deadline.
        self._timeout = max(min(self.config.retry_period, self.config.renew_deadline / 3), 0.5)

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    # --- standing by ----------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this process holds the Lease; until then it stands by."""
        loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        threading.Thread(target=self._watch, args=(loop,), name="lease-watch", daemon=True).start()
        announced = False
        while True:
            if self._may_take():
                sent = self._clock()
                if await loop.run_in_executor(self._threads, self._try_acquire):
                    self._stop_watch.set()
                    self._became_leader(sent)
                    return
            if not announced and self._observed is not None:
                log.info(
                    "standing by",
                    extra={"lease": self._where, "holder": self._observed.holder},
                )
                announced = True
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._next_look())

    def _may_take(self) -> bool:
        """Worth a try now: not watching (so what we saw may be stale), or free or expired."""
        seen = self._observed
        if not self._watching or seen is None:
            return True
        return not seen.holder or seen.holder == self.config.identity or self._expired()

    def _expired(self) -> bool:
        seen = self._observed
        return seen is not None and self._clock() >= self._observed_at + seen.duration

    def _next_look(self) -> float:
        seen = self._observed
        if seen is None or not seen.holder:
            return self.config.retry_period
        # Right when the holder's time is up, or at the next retry.
        left = self._observed_at + seen.duration - self._clock()
        return max(min(self.config.retry_period, left), 0.01)

    def _observe(self, lease: Any) -> None:
        record = _record(lease)
        with self._observing:
            if record != self._observed:
                self._observed, self._observed_at = record, self._clock()

    def _try_acquire(self) -> bool:
        """One attempt (on a lease thread): create the Lease, or take it if it may be taken."""
        config = self.config
        now = datetime.now(UTC)
        try:
            lease = self._leases.read_namespaced_lease(
                config.name, config.namespace, _request_timeout=self._timeout
            )
        except client.ApiException as error:
            if error.status != 404:
                log.warning(
                    "cannot read the Lease", extra={"lease": self._where, "status": error.status}
                )
                return False
            return self._create(now)
        except Exception as error:  # unreachable, timed out: the next attempt
            log.warning("cannot read the Lease", extra={"lease": self._where, "error": str(error)})
            return False
        self._observe(lease)
        seen = self._observed
        assert seen is not None
        if seen.holder and seen.holder != config.identity and not self._expired():
            return False
        if seen.holder != config.identity:
            lease.spec.lease_transitions = seen.transitions + 1
            lease.spec.acquire_time = now
        lease.spec.holder_identity = config.identity
        lease.spec.lease_duration_seconds = config.lease_duration
        lease.spec.renew_time = now
        return self._write(lease, taking_from=seen.holder)

    def _create(self, now: datetime) -> bool:
        config = self.config
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=config.name, namespace=config.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=config.identity,
                lease_duration_seconds=config.lease_duration,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self._lease = self._leases.create_namespaced_lease(
                config.namespace, body, _request_timeout=self._timeout
            )
        except client.ApiException as error:
            if error.status != 409:  # 409: another replica created it just now
                log.warning(
                    "cannot create the Lease", extra={"lease": self._where, "status": error.status}
                )
            return False
        except Exception as error:
            log.warning(
                "cannot create the Lease", extra={"lease": self._where, "error": str(error)}
            )
            return False
        self._observe(self._lease)
        return True

    def _write(self, lease: Any, *, taking_from: str) -> bool:
        config = self.config
        try:
            # The resourceVersion read above is the precondition: of two
            # standbys taking an expired Lease, one wins, the other gets 409.
            self._lease = self._leases.replace_namespaced_lease(
                config.name, config.namespace, lease, _request_timeout=self._timeout
            )
        except client.ApiException as error:
            if error.status != 409:
                log.warning(
                    "cannot take the Lease", extra={"lease": self._where, "status": error.status}
                )
            return False
        except Exception as error:
            log.warning("cannot take the Lease", extra={"lease": self._where, "error": str(error)})
            return False
        if taking_from and taking_from != config.identity:
            log.info("took over the Lease", extra={"lease": self._where, "from": taking_from})
        self._observe(self._lease)
        return True

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """See every change of the Lease while standing by (on a thread of its own)."""
        config = self.config

        def seen(lease: Any) -> None:
            self._observe(lease)
            assert self._changed is not None
            self._changed.set()

        while not self._stop_watch.is_set():
            stream = watch.Watch()
            try:
                self._watching = True
                for event in stream.stream(
                    self._leases.list_namespaced_lease,
                    config.namespace,
                    field_selector=f"metadata.name={config.name}",
                    timeout_seconds=60,
                    _request_timeout=75,
                ):
                    if self._stop_watch.is_set():
                        stream.stop()
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        loop.call_soon_threadsafe(seen, event["object"])
                    elif event["type"] == "DELETED":
                        loop.call_soon_threadsafe(self._changed_now)
            except client.ApiException as error:
                self._watching = False
                if error.status == 403:
                    log.warning(
                        "may not watch the Lease; looking every retry period instead",
                        extra={"lease": self._where},
                    )
                    return
                time.sleep(self.config.retry_period)
            except Exception:
                self._watching = False
                time.sleep(self.config.retry_period)
        self._watching = False

    def _changed_now(self) -> None:
        self._observed = None
        if self._changed is not None:
            self._changed.set()

    # --- leading --------------------------------------------------------------

    def _became_leader(self, sent: float) -> None:
        self._renewed_at = sent
        self._leading.set()
        metrics.LEADER.set(1)
        log.info("leading", extra={"lease": self._where, "identity": self.config.identity})
        threading.Thread(target=self._watchdog, name="lease-deadline", daemon=True).start()
        threading.Thread(target=self._renew_forever, name="lease-renewal", daemon=True).start()

    def _watchdog(self) -> None:
        """Enforce the renew deadline, whatever the event loop is doing."""
        deadline = self.config.renew_deadline
        while self._leading.is_set():
            late = self._clock() - self._renewed_at
            if late >= deadline:
                self._leading.clear()
                metrics.LEADER.set(0)
                self._on_lost(f"no renewal of the Lease succeeded for {late:.1f}s")
                return
            time.sleep(min(0.05, deadline - late))

    def _renew_forever(self) -> None:
        """Renew every retry period, on a thread of its own: an event loop busy
        with start-up or a burst of passes cannot hold a renewal back."""
        while not self._stop_renewing.wait(self.config.retry_period):
            sent = self._clock()
            try:
                with self._writing:
                    if not self._leading.is_set():
                        return  # released meanwhile, or the deadline passed
                    ours = self._renew()
            except Exception as error:
                log.warning(
                    "could not renew the Lease",
                    extra={"lease": self._where, "error": str(error),
                           "since_renewal": round(self._clock() - self._renewed_at, 2)},
                )  # fmt: skip
                continue
            if not self._leading.is_set():
                return
            if ours:
                self._renewed_at = sent
            else:
                self._leading.clear()
                metrics.LEADER.set(0)
                self._on_lost(f"the Lease is held by {self._observed and self._observed.holder}")
                return

    def _renew(self) -> bool:
        """Renew on a lease thread; False if somebody else holds the Lease now."""
        config = self.config
        for _ in range(2):
            lease = self._lease
            lease.spec.renew_time = datetime.now(UTC)
            try:
                self._lease = self._leases.replace_namespaced_lease(
                    config.name, config.namespace, lease, _request_timeout=self._timeout
                )
                return True
            except client.ApiException as error:
                if error.status != 409:
                    raise
            # Written by someone else since: still ours (edited by hand), or taken?
            current = self._leases.read_namespaced_lease(
                config.name, config.namespace, _request_timeout=self._timeout
            )
            self._observe(current)
            if (current.spec.holder_identity or "") != config.identity:
                return False
            self._lease = current
        return True  # ours, just changed twice: the next renewal will tell

    async def release(self) -> bool:
        """Give the Lease up, once this process has stopped acting. True if released."""
        if not self._leading.is_set():
            return False
        self._leading.clear()
        self._stop_renewing.set()
        metrics.LEADER.set(0)
        loop = asyncio.get_running_loop()
        try:
            released = await loop.run_in_executor(self._threads, self._release)
        except Exception as error:
            log.warning("could not release the Lease; it expires", extra={"error": str(error)})
            return False
        if released:
            log.info("released the Lease", extra={"lease": self._where})
        return released

    def _release(self) -> bool:
        with self._writing:  # after a renewal in flight, over the Lease it wrote
            return self._release_now()

    def _release_now(self) -> bool:
        config = self.config
        lease = self._lease
        now = datetime.now(UTC)
        # As client-go's ReleaseOnCancel: no holder, and a 1 s duration for
        # a standby that does not watch.
        lease.spec.holder_identity = None
        lease.spec.lease_duration_seconds = 1
        lease.spec.renew_time = now
        lease.spec.acquire_time = now
        try:
            self._leases.replace_namespaced_lease(
                config.name, config.namespace, lease, _request_timeout=self._timeout
            )
        except client.ApiException as error:
            if error.status == 409:
                return False  # no longer ours to release
            raise
        return True

    def abandon(self) -> None:
        """Stop renewing without releasing: the Lease expires on its own."""
        self._leading.clear()
        self._stop_renewing.set()
        metrics.LEADER.set(0)

    def stop(self) -> None:
        """Stop standing by (the watch thread ends with its current request)."""
        self._stop_watch.set()
        self._threads.shutdown(wait=False, cancel_futures=True)

    @property
    def _where(self) -> str:
        return f"{self.config.namespace}/{self.config.name}"


def default_identity() -> str:
    """POD_NAME when the chart sets it (the downward API), else host and pid."""
    return os.environ.get("POD_NAME") or f"{os.uname().nodename}_{os.getpid()}"
