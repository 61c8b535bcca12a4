"""`incident-operator ui`: the UI's process."""

from __future__ import annotations

import sys

from .. import logs
from ..config import Settings


def serve(*, host: str, port: int, namespace: str | None, log_level: str) -> int:
    import uvicorn

    from ..kube import api_client
    from ..timeline.dynamodb import DynamoTimeline
    from .app import create_app, kubernetes_events
    from .auth import UiAuth
    from .watch import IncidentWatch

    logs.configure(log_level, component="ui")
    settings = Settings()
    if namespace:
        settings.incident_namespace = namespace
    if not UiAuth(settings).configured():
        print(
            "refusing to start: no way to sign in. Set UI_TOKENS (or UI_TOKENS_FILE), "
            "UI_AUTH_PROXY_HEADER behind an authenticating proxy, or UI_AUTH_DISABLED=true.",
            file=sys.stderr,
        )
        return 2
    api = api_client()
    watch = IncidentWatch(api=api, namespace=settings.incident_namespace).start()
    watch.wait_synced(timeout=10)
    timeline = None
    if settings.timeline_table:
        timeline = DynamoTimeline(settings.timeline_table, region=settings.aws_region)
    app = create_app(
        settings=settings, watch=watch, events=kubernetes_events(api), timeline=timeline
    )
    # Streams stay open while pages are: on SIGTERM, close them after a moment
    # rather than wait for the browsers to leave.
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return 0
