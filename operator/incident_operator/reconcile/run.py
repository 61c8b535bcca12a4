"""`incident-operator run`: stand by, lead, hand over.

    serve /healthz and /metrics
      -> stand by: watch the Lease, take it when free or expired (leadership.py)
      -> lead: start kopf; its startup handler builds the reconciler, the
         retention and the census; the watch feeds them
      -> SIGTERM: 1. act no more: no new pass, the running ones get
                     `shutdown_grace` to finish and are cancelled after it
                     (abandoned as by a crash, which every step survives);
                     the retention stops deleting
                  2. wait for blocking calls already sent (a status write,
                     an ECS call in a thread): they cannot be called back
                  3. release the Lease: a watching standby takes it at once
                  4. stop kopf; exit 0
      -> the Lease lost (renew deadline passed, or someone else holds it):
         the process exits at once, from the election's own thread

Why kopf starts only once this replica leads, instead of running on every
replica with its handlers gated by "am I the leader?":

- A standby then has nothing that could act: no watch of Incidents, no
  reconciler, no wake-up timers, no retention. It is safe by construction,
  not by a check that each handler, timer and background task has to make
  at the right moment (a gate checked before an ECS call can be passed just
  before the Lease is lost).
- Taking over is exactly a restart, the path the design already makes safe:
  kopf lists every Incident and the reconciler continues each one from its
  status, finding what the previous leader did through its claims.
- Losing the Lease ends the process: that is the only way to be sure that
  nothing the old leader started (a pass, a timer, a thread in a blocking
  call) goes on. The Deployment restarts it, as a standby.

The price: a standby holds no warm cache, so a take-over lists every
Incident first (about a second with a few hundred); it costs the API
server one watch of one Lease per standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import kopf
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics
from ..kube import api_client
from .leadership import LeaderElector, LeaseConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

# Blocking calls already sent when SIGTERM came are waited for at most this
# long (within the pod's 30 s grace period); past it, the Lease is left to
# expire instead of being released under a call that may still land.
CALLS_GRACE_SECONDS = 15.0
# kopf's own shutdown (closing its watches), once nothing acts any more.
KOPF_STOP_SECONDS = 5.0


@dataclass(frozen=True)
class RunOptions:
    namespaces: list[str]
    listen: str  # http://host:port/path of the health check; /metrics beside it
    lease: LeaseConfig | None  # None: no election, this process leads at once
    shutdown_grace: float = 1.0


async def run(options: RunOptions) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    _on_signals(loop, stopping)
    elector = LeaderElector(api=api_client(), config=options.lease) if options.lease else None
    metrics.LEADER.set(0)
    acting = asyncio.Event()  # set once kopf's startup is done and it watches
    server = await _serve_http(options.listen, elector, acting)
    try:
        if elector is not None:
            if not await _first(elector.acquire(), stopping.wait()):
                log.info("stopped while standing by")
                return 0
        else:
            metrics.LEADER.set(1)
        return await _lead(options, elector, stopping, acting)
    finally:
        if elector is not None:
            elector.stop()
        await server.cleanup()


async def _lead(
    options: RunOptions,
    elector: LeaderElector | None,
    stopping: asyncio.Event,
    acting: asyncio.Event,
) -> int:
    loop = asyncio.get_running_loop()
    memo = kopf.Memo()
    stop_flag = asyncio.Event()
    existing = asyncio.all_tasks()  # kopf cancels every other task when it ends
    tasks = await kopf.spawn_tasks(
        standalone=True,  # no kopf peering: it pauses rather than elects
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        stop_flag=stop_flag,
        ready_flag=acting,
        memo=memo,
    )
    # kopf has just taken SIGINT and SIGTERM for itself; the hand-over is ours.
    _on_signals(loop, stopping)
    operator = loop.create_task(kopf.run_tasks(tasks, ignored=existing))
    stop = loop.create_task(stopping.wait())
    await asyncio.wait({operator, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    log.info("handing over" if stopping.is_set() else "kopf ended")
    acting.clear()
    status = 0
    if operator.done():
        log.error("kopf stopped on its own; handing over")
        status = 1
    calls_done = await _act_no_more(memo, grace=options.shutdown_grace)
    if elector is not None:
        if calls_done:
            await elector.release()
        else:
            log.warning("a blocking call is still in flight: the Lease is left to expire")
            elector.abandon()
    stop_flag.set()
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(operator, KOPF_STOP_SECONDS)
    if not calls_done:
        # Its thread would hold the interpreter's exit; nothing else is left.
        logging.shutdown()
        os._exit(status)
    log.info("stopped")
    return status


async def _act_no_more(memo: Any, *, grace: float) -> bool:
    """Stop everything that acts; True once no blocking call is in flight."""
    parts = getattr(memo, "parts", None)
    if parts is not None:
        parts.retention.close()
        parts.silences.close()
        await parts.reconciler.close(grace=grace)
    # Blocking calls run in the default executor's threads: shutting it down
    # refuses new ones and waits for those running.
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().shutdown_default_executor(), CALLS_GRACE_SECONDS
        )
    except TimeoutError:
        return False
    return True


async def _first(first: Awaitable[Any], other: Awaitable[Any]) -> bool:
    """Wait for whichever ends first, cancel the other: True if `first` did."""
    one, two = asyncio.ensure_future(first), asyncio.ensure_future(other)
    done, pending = await asyncio.wait({one, two}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if one in done:
        one.result()  # an acquisition that failed raises here
        return True
    return False


def _on_signals(loop: asyncio.AbstractEventLoop, stopping: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)


async def _serve_http(
    url: str, elector: LeaderElector | None, acting: asyncio.Event
) -> web.AppRunner:
    """/healthz (or the path given) and /metrics, on the event loop: the
    census is read where it is written, never from another thread."""
    where = urlsplit(url)
    if not where.hostname or not where.port:
        raise ValueError(f"--liveness needs a host and a port: {url}")

    async def health(_: web.Request) -> web.Response:
        # Alive in every state: a standby is healthy. `acting`: leading, and
        # kopf's startup (every ResponsePolicy loaded) is done.
        leading = elector.leading if elector is not None else True
        return web.json_response(
            {"status": "ok", "leading": leading, "acting": leading and acting.is_set()}
        )

    async def scrape(_: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get(where.path or "/healthz", health)
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, where.hostname, where.port).start()
    return runner
