"""One bounded JSON parse for every document the webhook reads.

`json.loads` recurses once per nesting level: `"[" * 1000` raises
RecursionError (an unauthenticated 500), and a few hundred levels already
cost pydantic a deep recursion of its own. Every JSON document the webhook
reads goes through `loads`: each request body (FastAPI's own body parsing
too, through `BoundedJsonRoute`), the SNS envelope and its Message, the
payload field of Slack's form. It measures the nesting depth first, in one
pass that stops at the limit, and refuses anything deeper than MAX_DEPTH
before the parser starts; anything else that is not JSON is refused with the
parser's own reason. Both are `JsonRefused`, which the routes answer with a
400 and a JSON error.

No alarm format nests deeper than about 8 levels (an EventBridge event with
metric-math queries); 64 leaves room for any sender's extra fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

MAX_DEPTH = 64

# A JSON string: brackets inside it do not nest. Unrolled (runs of plain
# characters in one step) and possessive (never backtracks), and an
# unterminated string runs to the end of the text: one linear pass whatever
# the input.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]++")

Code = Literal["invalid_json", "json_too_deep"]


class JsonRefused(ValueError):
    """A document that is not JSON, or nests deeper than MAX_DEPTH."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code: Code = code


def nesting_depth(text: str, *, stop_after: int = MAX_DEPTH) -> int:
    """How deep arrays and objects nest in `text`; counting stops past `stop_after`.

    Counts the same brackets the parser would open, so for any text the
    parser accepts (and for the part of any other text it reads before it
    fails) this is the depth it recurses to.
    """
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for bracket in brackets:
        if bracket == "[" or bracket == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_after:
                    break
        else:
            depth -= 1
    return deepest


def loads(
    document: bytes | str, *, what: str = "the request body", max_depth: int = MAX_DEPTH
) -> Any:
    """`document` parsed as JSON, or JsonRefused saying why not (`what` names it)."""
    if isinstance(document, bytes):
        try:
            # As json.loads does for bytes: UTF-8, -16 or -32, told by the first bytes.
            text = document.decode(json.detect_encoding(document), "surrogatepass")
        except UnicodeDecodeError:
            raise JsonRefused("invalid_json", f"{what} is not valid JSON: not UTF-8 text") from None
    else:
        text = document
    # No more openers in all than the limit (most alarms): no need to look closer.
    openers = text.count("[") + text.count("{")
    if openers > max_depth and nesting_depth(text, stop_after=max_depth) > max_depth:
        raise JsonRefused(
            "json_too_deep", f"{what} nests arrays and objects deeper than {max_depth} levels"
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonRefused(
            "invalid_json",
            f"{what} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})",
        ) from None
    except ValueError as error:  # an integer of more than 4,300 digits
        raise JsonRefused("invalid_json", f"{what} is not valid JSON: {error}") from None


class JsonBodyRefused(HTTPException):
    """A request body refused by `loads`, raised where FastAPI parses bodies.

    An HTTPException, so that FastAPI passes it through its body reading
    untouched (anything else it turns into a bare 400) to the app's handler.
    """

    def __init__(self, refused: JsonRefused) -> None:
        super().__init__(400, str(refused))
        self.code: Code = refused.code


class _BoundedJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = loads(await self.body())
            except JsonRefused as refused:
                raise JsonBodyRefused(refused) from None
        return self._json


class BoundedJsonRoute(APIRoute):
    """An APIRoute whose JSON body is parsed by `loads`.

    FastAPI reads a pydantic-typed body with `request.json()`; this route
    hands its handler a request whose `json()` is the bounded parse. The
    route, its body model and its OpenAPI schema are otherwise FastAPI's.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handler(_BoundedJsonRequest(request.scope, request.receive))

        return bounded


class JsonAsPostedRoute(BoundedJsonRoute):
    """A BoundedJsonRoute that reads its body as JSON whatever the Content-Type
    says: for senders that post JSON as something else (SNS, as text/plain).

    Which types are let in at all is the request gate's business (app.py);
    this route only keeps FastAPI from handing the model raw bytes.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def as_json(request: Request) -> Response:
            headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            return await handler(Request({**request.scope, "headers": headers}, request.receive))

        return as_json
