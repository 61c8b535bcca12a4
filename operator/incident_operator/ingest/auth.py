"""Bearer-token authentication for the ingest endpoints.

Several tokens are valid at once so they can be rotated: add the new one,
move the senders over, remove the old one. Tokens come from INGEST_TOKENS
and/or a file (a mounted Secret, re-read when it changes).
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..config import Settings

_bearer = HTTPBearer(auto_error=False, description="An ingest token (INGEST_TOKENS).")


class TokenCheck:
    """A FastAPI dependency: 401 unless the request carries a valid token."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._static = settings.ingest_token_set_static()
        self._file_tokens: frozenset[str] = frozenset()
        self._file_stamp: tuple[float, int] | None = None

    def tokens(self) -> frozenset[str]:
        path = self._settings.ingest_tokens_file
        if path is None:
            return self._static
        return self._static | self._read_file(path)

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

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> None:
        if self._settings.ingest_auth_disabled:
            return
        if credentials is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        offered = credentials.credentials.encode()
        # Compare against every token in constant time, never stopping early.
        valid = False
        for token in self.tokens():
            valid |= hmac.compare_digest(offered, token.encode())
        if not valid:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
