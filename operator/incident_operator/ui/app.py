"""The UI's HTTP app: pages rendered on the server, a stream of changes, no writes.

Routes: `/` (the list), `/rows` (the list's rows alone, for the script),
`/stream` (Server-Sent Events: "changed"), `/incidents/{namespace}/{name}`,
`/analytics`, `/login` and `/logout` (the token cookie), `/static/*`,
`/healthz` and `/readyz`. Everything but the last four needs a reader
(auth.py); nothing writes to the cluster or the timeline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from kubernetes import client
from starlette.responses import StreamingResponse

from .. import __version__
from ..config import Settings
from ..models import GROUP, Incident
from ..text import reveal
from ..timeline import Entry, Timeline
from . import analytics, listing, story, times
from .auth import COOKIE, Reader, UiAuth
from .watch import IncidentWatch

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# Nothing but this origin, and no inline script or style at all: alarm text
# that slipped through escaping still could not run or restyle the page.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
OPEN_PATHS = ("/healthz", "/readyz", "/login", "/static/")
MAX_LOGIN_BYTES = 8192
KEEPALIVE_SECONDS = 15.0
# Changes closer together than this are one "changed" for the browsers.
COALESCE_SECONDS = 0.25

Events = Callable[[Incident], Awaitable[list[dict[str, Any]]]]


def templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        duration=times.duration,
        stamp=times.stamp,
        reveal=lambda text: reveal(str(text)),
        web_link=web_link,
        percent=lambda share: f"{share * 100:.0f}%",
    )
    return environment


def web_link(url: object) -> str | None:
    """`url` if it is an http(s) address (a link never runs script), else None."""
    if not isinstance(url, str):
        return None
    return url if urlsplit(url).scheme in ("http", "https") else None


def kubernetes_events(api: client.ApiClient) -> Events:
    """The Events about an Incident (this one, by uid), read from the API server."""
    core = client.CoreV1Api(api)

    async def read(incident: Incident) -> list[dict[str, Any]]:
        metadata = incident.metadata
        selector = f"involvedObject.kind=Incident,involvedObject.name={metadata.get('name', '')}"
        if metadata.get("uid"):
            selector += f",involvedObject.uid={metadata['uid']}"
        listed = await asyncio.to_thread(
            core.list_namespaced_event,
            metadata.get("namespace", ""),
            field_selector=selector,
            _request_timeout=10,
            _preload_content=False,
        )
        return list(json.loads(listed.data).get("items", []))

    return read


def create_app(
    *,
    settings: Settings,
    watch: IncidentWatch,
    events: Events,
    timeline: Timeline | None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> FastAPI:
    auth = UiAuth(settings)
    pages = templates()
    app = FastAPI(
        title="incident-operator UI",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        reader = auth.reader(request)
        request.state.reader = reader
        if reader is None and not path.startswith(OPEN_PATHS):
            response: Response = _refused(request, pages, auth)
        else:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Frame-Options"] = "DENY"
        if not path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        reader: Reader | None = request.state.reader
        html = _template(pages, template).render(
            reader=reader, logout=auth.uses_tokens, now=now(), **context
        )
        return HTMLResponse(html, status_code=status)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        return "ok"

    @app.get("/readyz", response_class=PlainTextResponse)
    async def readyz() -> Response:
        if watch.synced:
            return PlainTextResponse("ok")
        return PlainTextResponse("the Incidents are not listed yet", status_code=503)

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> Response:
        if not auth.uses_tokens:  # the proxy signs people in, or nobody needs to
            return RedirectResponse("/", status_code=303)
        return page(request, "login.html", failed=False)

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        if not auth.uses_tokens:
            return RedirectResponse("/", status_code=303)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BYTES:  # a token is not that long
                return PlainTextResponse("too large", status_code=413)
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
        if not token or not auth.accepts(token):
            return page(request, "login.html", status=401, failed=True)
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=_secure(request, settings),
            max_age=12 * 3600,
        )
        return answer

    @app.post("/logout")
    async def logout() -> Response:
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(COOKIE)
        return answer

    @app.get("/", response_class=HTMLResponse)
    async def incident_list(request: Request) -> HTMLResponse:
        filters = listing.Filters.from_query(request.query_params)
        incidents = watch.incidents()
        return page(
            request,
            "list.html",
            filters=filters,
            found=listing.listing(incidents, filters, now()),
            services=listing.services(incidents),
            phases=listing.PHASES,
            severities=listing.SEVERITIES,
            since=list(listing.SINCE),
            version=watch.version,
            synced=watch.synced,
        )

    @app.get("/rows", response_class=HTMLResponse)
    async def incident_rows(request: Request) -> HTMLResponse:
        filters = listing.Filters.from_query(request.query_params)
        found = listing.listing(watch.incidents(), filters, now())
        return page(request, "rows.html", found=found, version=watch.version)

    @app.get("/stream")
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(
            _changes(watch),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/incidents/{namespace}/{name}", response_class=HTMLResponse)
    async def incident_page(request: Request, namespace: str, name: str) -> HTMLResponse:
        incident = watch.get(namespace, name)
        entries = await _timeline(timeline, f"{namespace}/{name}")
        if incident is None:
            chapters = story.tell(entries=entries, events=[], created=None)
            return page(
                request, "gone.html", status=404, namespace=namespace, name=name, story=chapters
            )
        try:
            happened = await events(incident)
        except (client.ApiException, OSError) as error:
            log.warning("could not read Events", extra={"incident": incident.reference,
                                                        "error": str(error)[:300]})  # fmt: skip
            happened = []
        return page(
            request,
            "incident.html",
            incident=incident,
            row=listing.row(incident, now()),
            story=story.tell(entries=entries, events=happened, created=times.opened(incident)),
            timeline_configured=timeline is not None,
            kubectl=f"kubectl -n {namespace} get incident {name} -o yaml",
            group=GROUP,
        )

    @app.get("/analytics", response_class=HTMLResponse)
    async def analytics_page(request: Request) -> HTMLResponse:
        try:
            days = int(request.query_params.get("days", "7"))
        except ValueError:
            days = 7
        if days not in analytics.PERIODS:
            days = 7
        started = time.perf_counter()
        report = analytics.analyse(watch.incidents(), days=days, now=now())
        return page(
            request,
            "analytics.html",
            report=report,
            periods=analytics.PERIODS,
            percentiles=analytics.PERCENTILES,
            took_ms=(time.perf_counter() - started) * 1000,
        )

    return app


async def _changes(watch: IncidentWatch) -> AsyncIterator[str]:
    """The stream: the version at once (a page older than it refreshes), then
    one "changed" per burst of changes, and a comment now and then so that
    proxies keep the connection."""
    changed = watch.follow()
    try:
        yield "retry: 3000\n\n"
        yield f"event: changed\ndata: {watch.version}\n\n"
        while True:
            try:
                await asyncio.wait_for(changed.wait(), timeout=KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": still here\n\n"
                continue
            await asyncio.sleep(COALESCE_SECONDS)
            changed.clear()
            yield f"event: changed\ndata: {watch.version}\n\n"
    finally:
        watch.unfollow(changed)


async def _timeline(timeline: Timeline | None, incident_id: str) -> list[Entry]:
    if timeline is None:
        return []
    try:
        return await timeline.read(incident_id)
    except (BotoCoreError, ClientError) as error:  # the page still shows the rest
        log.warning("could not read the timeline", extra={"incident": incident_id,
                                                          "error": str(error)[:300]})  # fmt: skip
        return []


def _refused(request: Request, pages: Environment, auth: UiAuth) -> Response:
    headers = {"WWW-Authenticate": "Bearer"}
    wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
    if wants_page and auth.uses_tokens:
        html = _template(pages, "login.html").render(
            reader=None, logout=False, now=datetime.now(UTC), failed=False
        )
        return HTMLResponse(html, status_code=401, headers=headers)
    return PlainTextResponse("not signed in", status_code=401, headers=headers)


def _template(pages: Environment, name: str) -> Template:
    # select_template, not get_template: tests/test_chart.py finds the AWS
    # calls of the package by name, and SES has a GetTemplate.
    return pages.select_template([name])


def _secure(request: Request, settings: Settings) -> bool:
    if settings.ui_public_url:
        return settings.ui_public_url.startswith("https://")
    return request.url.scheme == "https"
