"""The webhook's API docs (Swagger UI at /docs), served from the package.

FastAPI's own /docs page loads Swagger UI's JavaScript and CSS from a CDN
(broken offline and in locked-down clusters, and code from elsewhere running
on our origin). Here the two files come from `docs_assets/` (see its
NOTICE), the favicon is inline, Swagger UI's online validator is off, and
the page's Content-Security-Policy lets the browser load nothing that is
not on this origin. ReDoc is not served: one UI is enough.

The docs are off by default (INGEST_DOCS_ENABLED): the OpenAPI document
tells anyone who asks what the webhook accepts, and it is not
authenticated.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent / "docs_assets"
ASSETS_PATH = "/docs/assets"
# Swagger UI's page has an inline script and inline styles; everything it
# fetches (its files, the OpenAPI document, "Try it out") is on this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs for `app`'s OpenAPI document, assets included."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url="data:,",
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page
