"""Bearer-token authentication for the ingest endpoints.

Several tokens are valid at once so they can be rotated: add the new one,
move the senders over, remove the old one. Tokens come from INGEST_TOKENS
and/or a file (a mounted Secret, re-read when it changes).
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from ..config import Settings

_bearer = HTTPBearer(auto_error=False, description="An ingest token (INGEST_TOKENS).")


class TokenSet:
    """Valid bearer tokens: static ones plus a file's lines, the file re-read when it changes.

    Shared by the webhook (INGEST_TOKENS) and the web UI (UI_TOKENS).
    """

    def __init__(self, *, static: frozenset[str], path: Path | None) -> None:
        self._static = static
        self.path = path
        self._file_tokens: frozenset[str] = frozenset()
        self._file_stamp: tuple[float, int] | None = None

    def tokens(self) -> frozenset[str]:
        if self.path is None:
            return self._static
        return self._static | self._read_file(self.path)

    def accepts(self, offered: str) -> bool:
        """Compared against every token in constant time, never stopping early."""
        valid = False
        for token in self.tokens():
            valid |= hmac.compare_digest(offered.encode(), token.encode())
        return valid

    def _read_file(self, path: Path) -> frozenset[str]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return frozenset()
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._file_stamp:
            lines = path.read_text().splitlines()
            self._file_tokens = frozenset(line.strip() for line in lines if line.strip())
            self._file_stamp = stamp
        return self._file_tokens


class TokenCheck:
    """401 unless a request carries a valid token.

    `verify` is the check, on the Authorization header as sent; called as a
    FastAPI dependency, it also puts the bearer scheme in the OpenAPI document.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tokens = TokenSet(
            static=settings.ingest_token_set_static(), path=settings.ingest_tokens_file
        )

    def tokens(self) -> frozenset[str]:
        return self._tokens.tokens()

    def verify(self, authorization: str | None) -> None:
        """Raise 401 unless `authorization` is `Bearer <a valid token>`."""
        if self._settings.ingest_auth_disabled:
            return
        # Read as FastAPI's HTTPBearer reads it: the scheme in any case.
        scheme, token = get_authorization_scheme_param(authorization)
        if not (authorization and token) or scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not self._tokens.accepts(token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        self.verify(request.headers.get("authorization"))
