"""Who may read the UI: a bearer token, or an authenticating proxy's header.

Three ways, one of them chosen by the settings:

- tokens (UI_TOKENS / UI_TOKENS_FILE, rotated like the webhook's): sent as
  `Authorization: Bearer`, or typed once into /login, which keeps it in an
  HttpOnly, SameSite=Strict cookie (a browser cannot send a header by
  itself; the script never sees the token);
- a proxy's header (UI_AUTH_PROXY_HEADER, e.g. X-Forwarded-User from
  oauth2-proxy): trusted as is, so only the proxy may reach the UI (the
  chart's NetworkPolicy);
- none (UI_AUTH_DISABLED), for closed networks and the dev stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from ..config import Settings
from ..ingest.auth import TokenSet

COOKIE = "incident_ui_token"


@dataclass(frozen=True)
class Reader:
    """Who is reading: shown in the page's header."""

    name: str


class UiAuth:
    def __init__(self, settings: Settings) -> None:
        self.disabled = settings.ui_auth_disabled
        self.proxy_header = (settings.ui_auth_proxy_header or "").strip() or None
        self._tokens = TokenSet(static=settings.ui_token_set_static(), path=settings.ui_tokens_file)

    @property
    def uses_tokens(self) -> bool:
        return not self.disabled and self.proxy_header is None

    def configured(self) -> bool:
        """Whether anyone could get in (refuse to start otherwise)."""
        return (
            self.disabled
            or self.proxy_header is not None
            or bool(self._tokens.tokens())
            or self._tokens_file_set
        )

    @property
    def _tokens_file_set(self) -> bool:
        return self._tokens.path is not None

    def reader(self, request: HTTPConnection) -> Reader | None:
        """Who sent the request, or None: not allowed in."""
        if self.disabled:
            return Reader("anyone (authentication is off)")
        if self.proxy_header is not None:
            user = request.headers.get(self.proxy_header, "").strip()
            return Reader(user[:256]) if user else None
        token = bearer(request.headers.get("authorization", "")) or request.cookies.get(COOKIE)
        if token and self.accepts(token):
            return Reader("token")
        return None

    def accepts(self, token: str) -> bool:
        return self._tokens.accepts(token)


def bearer(header: str) -> str | None:
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
