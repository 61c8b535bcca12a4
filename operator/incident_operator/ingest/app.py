"""The ingest webhook: a FastAPI app that turns alarms into Incidents.

Request checks, in order, each a clear answer with a JSON body and no side
effect: room for one more alarm request (503 past INGEST_MAX_IN_FLIGHT:
shedding.py), content type (415) and size (413) before anything is read,
then JSON syntax and nesting depth (400, one bounded parse for every body:
jsonbody.py), the bearer token (401), the payload's schema (422), the number
of alerts (413), all before anything is written.

Every alarm source is served the same way (`_add_source_route`): its path,
its content types, the bearer token unless the source's requests prove
themselves, and its own verification between the schema and the parse
(SNS's topic, age and signature checks and its subscription handshake:
sources/sns.py). The OpenAPI document and Swagger UI are served only with
INGEST_DOCS_ENABLED (docs.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from kubernetes import client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..config import Settings
from ..slack.actions import slack_actions_router
from .alarm import (
    AlarmSource,
    Delivery,
    Fetch,
    InvalidAlarm,
    Posted,
    Refused,
    RefusedAlert,
    Verify,
    require_unicode,
)
from .auth import TokenCheck
from .docs import add_docs
from .jsonbody import BoundedJsonRoute, JsonAsPostedRoute, JsonBodyRefused, JsonRefused, loads
from .metrics import IngestMetrics
from .pagerduty_webhook import pagerduty_webhook_router
from .recorder import AlarmRecorder, ApiUnavailable
from .shedding import InFlightLimit, Overloaded
from .sources import SOURCES
from .sources.sns import https_get

log = logging.getLogger(__name__)

SLACK_ACTIONS_TYPES = {"/slack/actions": ("application/x-www-form-urlencoded",)}
PAGERDUTY_WEBHOOK_TYPES = {"/pagerduty/webhook": ("application/json",)}


class IncidentRef(BaseModel):
    name: str | None
    result: str
    occurrences: int


class RefusedRef(BaseModel):
    alert: int
    fingerprint: str | None
    message: str


class IngestAnswer(BaseModel):
    """What happened to each alarm in the request.

    `refused` and `truncated` are for notifications about a group of alerts
    (Alertmanager): the alerts refused one by one, and how many alerts the
    sender itself left out of the notification.
    """

    received: int
    incidents: list[IncidentRef]
    refused: list[RefusedRef] = []
    truncated: int = 0


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


class RequestGate:
    """ASGI middleware: 415 for a wrong content type, 413 past the size limit.

    Runs before FastAPI reads a byte of the body, so an oversized request is
    refused while it streams in, not after it is buffered.
    """

    def __init__(
        self, app: ASGIApp, *, max_body: int, content_types: Mapping[str, tuple[str, ...]]
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.content_types = content_types

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # latin-1, as HTTP defines header bytes: any byte decodes.
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        allowed = self.content_types.get(scope["path"])
        if allowed is not None:
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media not in allowed:
                response = error(
                    415,
                    "unsupported_media_type",
                    f"Content-Type must be {' or '.join(allowed)}, got {media or 'none'!r}",
                )
                await response(scope, receive, send)
                return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # An HTTPException passes through FastAPI's body reading
                    # untouched and reaches the JSON error handler.
                    raise StarletteHTTPException(413, self._too_large_message())
            return message

        await self.app(scope, counting_receive, send)

    def _too_large_message(self) -> str:
        return f"request body over the limit of {self.max_body} bytes"

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error(413, "payload_too_large", self._too_large_message())
        await response(scope, receive, send)


def create_app(
    *,
    settings: Settings,
    recorder: AlarmRecorder,
    api: client.ApiClient,
    sns_fetch: Fetch = https_get,
    registry: CollectorRegistry | None = None,
    sources: Sequence[AlarmSource] = SOURCES,
) -> FastAPI:
    """The webhook, serving `sources`. `sns_fetch` is how the sources'
    verifications fetch URLs (SNS's signing certificates and subscription
    confirmations); tests give a recording one."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = IngestMetrics(registry)
    token_check = TokenCheck(settings)
    readiness = _Readiness(api)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await recorder.close()

    app = FastAPI(
        lifespan=lifespan,
        title="incident-operator ingest webhook",
        description="Turns alarms (CloudWatch, SNS, Alertmanager, generic JSON) into Incidents.",
        version="0.1.0",
        # Off unless asked for; add_docs serves them without any CDN.
        openapi_url="/openapi.json" if settings.ingest_docs_enabled else None,
        docs_url=None,
        redoc_url=None,
    )
    # Every JSON body FastAPI parses goes through the bounded parse.
    app.router.route_class = BoundedJsonRoute
    app.add_middleware(
        RequestGate,
        max_body=settings.ingest_max_body_bytes,
        content_types={
            **{source.path: source.content_types for source in sources},
            **SLACK_ACTIONS_TYPES,
            **PAGERDUTY_WEBHOOK_TYPES,
        },
    )
    # Added last, so it runs first: a shed request costs no body read, no check.
    source_names = {source.path: source.name for source in sources}
    app.add_middleware(
        InFlightLimit,
        limit=settings.ingest_max_in_flight,
        paths=source_names,
        on_shed=lambda path: metrics.shed.labels(source=source_names[path]).inc(),
        on_change=metrics.in_flight.set,
    )
    if settings.ingest_docs_enabled:
        add_docs(app)

    def refuse_json(refused: JsonRefused | JsonBodyRefused) -> JSONResponse:
        metrics.rejected.labels(reason=refused.code).inc()
        message = str(refused.detail) if isinstance(refused, JsonBodyRefused) else str(refused)
        return error(400, refused.code, message)

    @app.exception_handler(JsonBodyRefused)
    async def refused_json_body(request: Request, exc: JsonBodyRefused) -> JSONResponse:
        return refuse_json(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            metrics.rejected.labels(reason="invalid_json").inc()
            return error(400, "invalid_json", "the request body is not valid JSON")
        metrics.rejected.labels(reason="invalid_payload").inc()
        return error(422, "invalid_payload", _summary(errors), details=_details(errors))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        # Its body came in after the webhook filled up (shedding.py): the
        # same answer as a request refused at its headers.
        response = error(503, "overloaded", str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
        }
        if exc.status_code == 401:
            metrics.rejected.labels(reason="unauthorized").inc()
        response = error(exc.status_code, code.get(exc.status_code, "error"), str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    async def ingest(source: AlarmSource, delivery: Delivery) -> Response:
        alarms = delivery.alarms
        limit = settings.ingest_max_alerts_per_request
        if len(alarms) + len(delivery.refused) > limit:
            # 413, not 422: the request is well-formed, only more than this
            # webhook takes at once, as with the byte limit. Refused whole,
            # before any write, so a sender that splits it (Alertmanager's
            # max_alerts) loses nothing and counts nothing twice.
            metrics.rejected.labels(reason="too_many_alerts").inc()
            return error(
                413,
                "too_many_alerts",
                f"{len(alarms)} alerts in one request; at most {limit} are accepted "
                "(INGEST_MAX_ALERTS_PER_REQUEST): send fewer per request",
            )
        if delivery.truncated:
            metrics.truncated.inc(delivery.truncated)
            log.warning(
                "the notification left alerts out",
                extra={"source": source.name, "truncated": delivery.truncated},
            )
        started = time.perf_counter()
        # Every alarm at once: the recorder writes each fingerprint in turn
        # and different ones side by side, so a group of many alerts takes
        # about as long as its slowest alert, not as all of them in a row.
        outcomes = await asyncio.gather(
            *(recorder.record(alarm) for alarm in alarms), return_exceptions=True
        )
        metrics.latency.labels(source=source.name).observe(time.perf_counter() - started)
        refs = []
        refused = list(delivery.refused)
        for index, (alarm, outcome) in enumerate(zip(alarms, outcomes, strict=True)):
            if isinstance(outcome, ApiUnavailable):
                # The sender retries the whole request; what was recorded
                # meanwhile is recognized as a redelivery.
                log.warning(
                    "API server unavailable", extra={"source": source.name, "error": str(outcome)}
                )
                metrics.rejected.labels(reason="api_unavailable").inc()
                response = error(503, "unavailable", "the Kubernetes API is unavailable; retry")
                response.headers["Retry-After"] = "5"
                return response
            if isinstance(outcome, InvalidAlarm):
                refused.append(RefusedAlert(index, alarm.fingerprint, str(outcome)))
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            metrics.received.labels(source=source.name, outcome=outcome.result).inc()
            if outcome.result == "redelivery":
                metrics.dedup_hits.labels(source=source.name, kind="redelivery").inc()
            elif outcome.result == "counted":
                metrics.dedup_hits.labels(source=source.name, kind="occurrence").inc()
            # A new Incident or a recovery is news; a repeat is a count (in
            # the metrics and the Incident): at debug, so a storm of a
            # thousand alarms a second does not write a thousand log lines.
            news = outcome.result in ("created", "recovered")
            log.log(
                logging.INFO if news else logging.DEBUG,
                "alarm recorded",
                extra={
                    "incident": outcome.incident,
                    "source": source.name,
                    "result": outcome.result,
                    "occurrences": outcome.occurrences,
                    "fingerprint": alarm.fingerprint,
                },
            )
            refs.append(
                IncidentRef(
                    name=outcome.incident, result=outcome.result, occurrences=outcome.occurrences
                )
            )
        reason = "invalid_alert" if source.alert_by_alert else "invalid_alarm"
        for alert in refused:
            metrics.rejected.labels(reason=reason).inc()
            log.warning(
                "alert refused",
                extra={
                    "source": source.name,
                    "alert": alert.index,
                    "fingerprint": alert.fingerprint,
                    "error": alert.message[:300],
                },
            )
        if refused and not source.alert_by_alert:
            return error(422, "invalid_alarm", refused[0].message)
        answer = IngestAnswer(
            received=len(alarms) + len(delivery.refused),
            incidents=refs,
            refused=[
                RefusedRef(alert=a.index, fingerprint=a.fingerprint, message=a.message)
                for a in refused
            ],
            truncated=delivery.truncated,
        )
        return Response(answer.model_dump_json(), media_type="application/json")

    def refuse(refused: Refused) -> JSONResponse:
        metrics.rejected.labels(reason=refused.reason).inc()
        response = error(refused.status, refused.code, str(refused))
        if refused.retry_after is not None:
            response.headers["Retry-After"] = str(refused.retry_after)
        return response

    for source in sources:
        _add_source_route(
            app,
            source,
            verify=source.verification(settings, fetch=sns_fetch),
            token_check=token_check if source.bearer_token else None,
            ingest=ingest,
            refuse=refuse,
            metrics=metrics,
        )

    app.include_router(slack_actions_router(settings=settings, api=api))
    app.include_router(pagerduty_webhook_router(settings=settings, api=api))

    @app.get("/", tags=["service"], summary="What this is")
    async def root() -> dict[str, str | None]:
        docs = "/docs" if settings.ingest_docs_enabled else None
        return {"service": "incident-operator ingest webhook", "status": "running", "docs": docs}

    @app.get("/health", tags=["service"], summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "healthy", "version": __version__}

    @app.get("/readyz", tags=["service"], summary="Readiness: the Kubernetes API answers")
    async def readyz() -> Response:
        problem = await readiness.check()
        if problem:
            return error(503, "not_ready", problem)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def parse_alarms(source: AlarmSource, payload: BaseModel) -> Delivery:
    """The source's alarms, refusing text that is not Unicode (see require_unicode)."""
    delivery = source.parse(payload)
    for alarm in delivery.alarms:
        require_unicode(alarm)
    return delivery


# A sender that may send the same request twice (a retry after a timeout)
# names it; the alarms in it then count once, as SNS and EventBridge
# redeliveries do by their own ids. Printable ASCII, no spaces.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,128}$",
        description="Names this request: sent again (a retry), its alarms count once.",
    ),
]


def with_idempotency_key(delivery: Delivery, key: str | None) -> Delivery:
    """Give alarms without a delivery id of their own one made from the key."""
    if key is None:
        return delivery
    delivery.alarms = [
        alarm
        if alarm.delivery_id
        else alarm.model_copy(update={"delivery_id": f"key:{key}#{index}"})
        for index, alarm in enumerate(delivery.alarms)
    ]
    return delivery


def _add_source_route(
    app: FastAPI,
    source: AlarmSource,
    *,
    verify: Verify | None,
    token_check: TokenCheck | None,
    ingest: Callable[[AlarmSource, Delivery], Awaitable[Response]],
    refuse: Callable[[Refused], Response],
    metrics: IngestMetrics,
) -> None:
    """`POST source.path`: the body as the source's payload model, the bearer
    token (unless `token_check` is None), the source's verification (if it
    has one), then its alarms parsed and recorded.

    FastAPI declares the route (its OpenAPI document: body model, token,
    Idempotency-Key header, answer); `lean_handler` serves it.
    """

    async def receive(
        request: Request, payload: BaseModel, idempotency_key: IdempotencyKey = None
    ) -> Response:
        if verify is not None:
            # Read once already (the body is cached): a check of a signature
            # over the raw bytes sees exactly what was sent.
            posted = Posted(headers=request.headers, body=await request.body())
            try:
                handshake = await verify(payload, posted)
            except Refused as refused:
                return refuse(refused)
            if handshake is not None:
                return JSONResponse(handshake.answer)
        try:
            delivery = parse_alarms(source, payload)
        except InvalidAlarm as exc:
            metrics.rejected.labels(reason="invalid_alarm").inc()
            return error(422, "invalid_alarm", str(exc))
        return await ingest(source, with_idempotency_key(delivery, idempotency_key))

    # FastAPI reads the body's model off the annotation: give each route its own.
    receive.__annotations__["payload"] = source.payload
    other_types = [media for media in source.content_types if media != "application/json"]
    schema = {"$ref": f"#/components/schemas/{source.payload.__name__}"}
    app.router.add_api_route(
        source.path,
        receive,
        methods=["POST"],
        tags=["alarms"],
        summary=(source.__doc__ or source.name).strip().splitlines()[0],
        response_model=IngestAnswer,
        dependencies=[Depends(token_check)] if token_check is not None else [],
        name=f"receive_{source.name}",
        # Documented beside application/json, and read as JSON all the same.
        openapi_extra=(
            {"requestBody": {"content": {media: {"schema": schema} for media in other_types}}}
            if other_types
            else None
        ),
        route_class_override=JsonAsPostedRoute if other_types else BoundedJsonRoute,
    )
    route = app.router.routes[-1]
    assert isinstance(route, APIRoute) and route.endpoint is receive
    route.app = request_response(lean_handler(source.payload, token_check, receive))


Endpoint = Callable[[Request, BaseModel, str | None], Awaitable[Response]]
_IDEMPOTENCY_KEY: TypeAdapter[str | None] = TypeAdapter(IdempotencyKey)


def lean_handler(
    model: type[BaseModel], token_check: TokenCheck | None, endpoint: Endpoint
) -> Callable[[Request], Awaitable[Response]]:
    """An alarm route's handler: what FastAPI's own does for it, in the same
    order and with the same errors, without its general machinery.

    Every alarm is a request here, and FastAPI's dependency solving (the
    token, the header, the body model, found anew on every request) was a
    tenth of the webhook's CPU per new alarm and a third of a storm
    request's time (bench/RESULTS.md). This reads the body once with the
    bounded parse (400), checks the token (401), validates the
    Idempotency-Key header and the body model together (422), then calls
    the route's endpoint. The errors are raised as FastAPI raises them, so
    the app's handlers answer them (test_webhook.py compares both, request
    by request).
    """

    async def handle(request: Request) -> Response:
        body = await request.body()
        try:
            document = loads(body) if body else None
        except JsonRefused as refused:
            raise JsonBodyRefused(refused) from None
        if token_check is not None:
            token_check.verify(request.headers.get("authorization"))
        errors: list[dict[str, Any]] = []
        key = request.headers.get("idempotency-key")
        try:
            key = _IDEMPOTENCY_KEY.validate_python(key)
        except ValidationError as invalid:
            errors += _located(invalid, "header", "Idempotency-Key")
        payload = None
        if not body:
            errors.append({"type": "missing", "loc": ("body",), "msg": "Field required"})
        else:
            try:
                payload = model.model_validate(document, from_attributes=True)
            except ValidationError as invalid:
                errors += _located(invalid, "body")
        if errors or payload is None:
            raise RequestValidationError(errors, body=document)
        return await endpoint(request, payload, key)

    return handle


def _located(invalid: ValidationError, *where: str) -> list[dict[str, Any]]:
    return [{**error, "loc": (*where, *error["loc"])} for error in invalid.errors()]


class _Readiness:
    """Asks the API server for /version at most once a second."""

    def __init__(self, api: client.ApiClient) -> None:
        self._version = client.VersionApi(api)
        self._checked_at = 0.0
        self._problem: str | None = "not checked yet"

    async def check(self) -> str | None:
        if time.monotonic() - self._checked_at >= 1.0:
            try:
                await asyncio.to_thread(self._version.get_code, _request_timeout=(2, 3))
                self._problem = None
            except Exception as exc:  # any failure means "not ready", with the reason
                self._problem = f"Kubernetes API unreachable: {type(exc).__name__}: {exc}"
            self._checked_at = time.monotonic()
        return self._problem


def _details(errors: Any) -> list[dict[str, Any]]:
    # Echo where and what, never the input itself: it may be huge or hostile.
    return [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": e.get("msg", "")}
        for e in list(errors)[:20]
    ]


def _summary(errors: Any) -> str:
    details = _details(errors)
    if not details:
        return "the payload does not match the schema"
    first = details[0]
    where = ".".join(part for part in first["loc"] if part != "body") or "body"
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return f"{where}: {first['msg']}{more}"
