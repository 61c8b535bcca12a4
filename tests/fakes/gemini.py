"""A fake Gemini API on loopback: `POST /{version}/models/{model}:generateContent`.

The real google-genai client talks to it through `HttpOptions(base_url=...)`.
Tests script its answers in order (`answer`, `fail`, each optionally after a
delay) and assert on what it received (`requests`). Like the real API it
wants an API key, refuses a malformed body, and refuses a responseSchema
with a field the Developer API does not know (a 400 the real service gives
for `additionalProperties`, for instance), so a schema that would fail in
production fails here too.

Register it with `pytest_plugins = ["fakes.gemini"]` (or `-p fakes.gemini`)
to get the `gemini` fixture.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

PATH = re.compile(r"^/(?P<version>v1[a-z0-9]*)/models/(?P<model>[^/:]+):generateContent$")

# google.rpc.Code names, as the API puts them in error.status.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# The fields of the Developer API's Schema message (v1beta). Like any proto3
# JSON parser the API accepts each by its JSON name and by its proto name
# (google-genai sends `property_ordering`, `max_length`).
_SCHEMA_JSON_NAMES = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
SCHEMA_FIELDS = _SCHEMA_JSON_NAMES | {
    re.sub(r"([A-Z])", lambda m: "_" + m[1].lower(), name) for name in _SCHEMA_JSON_NAMES
}


@dataclass(frozen=True)
class Reply:
    """One scripted reply: an answer text (status 200) or an error status."""

    status: int = 200
    text: str | None = ""  # None: a candidate without content (blocked)
    finish_reason: str = "STOP"
    error: str = ""
    delay: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    # Function calls the model makes instead of answering: (name, args).
    function_calls: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class Request:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]

    @property
    def model(self) -> str | None:
        match = PATH.match(self.path)
        return match["model"] if match else None

    @property
    def api_version(self) -> str | None:
        match = PATH.match(self.path)
        return match["version"] if match else None

    @property
    def api_key(self) -> str | None:
        return self.headers.get("x-goog-api-key")

    @property
    def system_text(self) -> str:
        parts = (self.body.get("systemInstruction") or {}).get("parts", [])
        return "".join(part.get("text", "") for part in parts)

    @property
    def user_text(self) -> str:
        return "".join(
            part.get("text", "")
            for content in self.body.get("contents", [])
            for part in content.get("parts", [])
        )

    @property
    def generation_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.body.get("generationConfig") or {}
        return config

    @property
    def response_schema(self) -> dict[str, Any] | None:
        return self.generation_config.get("responseSchema")

    @property
    def functions(self) -> list[dict[str, Any]]:
        """The function declarations offered to the model."""
        return [
            declaration
            for tool in self.body.get("tools", [])
            for declaration in tool.get("functionDeclarations", [])
        ]

    @property
    def function_responses(self) -> list[dict[str, Any]]:
        """The function responses sent back, in order."""
        return [
            part["functionResponse"]
            for content in self.body.get("contents", [])
            for part in content.get("parts", [])
            if "functionResponse" in part
        ]


def _unknown_schema_field(schema: Any, where: str) -> str | None:
    """The first field the API's Schema message lacks, as the API names it."""
    if not isinstance(schema, dict):
        return None
    for name in schema:
        if name not in SCHEMA_FIELDS:
            return f"Unknown name \"{name}\" at '{where}': Cannot find field."
    nested = [
        *((f"{where}.properties[{k}].value", v) for k, v in schema.get("properties", {}).items()),
        *((f"{where}.any_of[{i}]", v) for i, v in enumerate(schema.get("anyOf") or [])),
        *((f"{where}.any_of[{i}]", v) for i, v in enumerate(schema.get("any_of") or [])),
        *([(f"{where}.items", schema["items"])] if "items" in schema else []),
    ]
    return next(
        (found for path, sub in nested if (found := _unknown_schema_field(sub, path))), None
    )


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "status": STATUS_NAMES.get(status, HTTPStatus(status).phrase.upper()),
        }
    }


@dataclass
class FakeGemini:
    """The fake's state: scripted replies, received requests, the server."""

    # When set, any other key is refused as the real API refuses it.
    api_key: str | None = None
    requests: list[Request] = field(default_factory=list)
    _replies: deque[Reply] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    # --- scripting ---------------------------------------------------------

    def answer(
        self,
        text: str | Mapping[str, Any],
        *,
        prompt_tokens: int = 120,
        output_tokens: int = 30,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Queue a 200 whose candidate says `text` (a mapping is sent as JSON)."""
        body = text if isinstance(text, str) else json.dumps(text)
        reply = Reply(
            text=body, prompt_tokens=prompt_tokens, output_tokens=output_tokens, delay=delay
        )
        with self._lock:
            self._replies.extend([reply] * times)

    def call(
        self, *calls: tuple[str, dict[str, Any]], prompt_tokens: int = 90, output_tokens: int = 10
    ) -> None:
        """Queue a 200 in which the model calls functions (name, args) instead of answering."""
        reply = Reply(
            text=None,
            function_calls=calls,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
        )
        with self._lock:
            self._replies.append(reply)

    def pending(self) -> int:
        """Scripted replies that no request met yet."""
        with self._lock:
            return len(self._replies)

    def block(self, finish_reason: str = "SAFETY") -> None:
        """Queue a 200 whose candidate has no content, as for a safety block."""
        with self._lock:
            self._replies.append(Reply(text=None, finish_reason=finish_reason))

    def fail(
        self,
        status: int,
        message: str = "The model is overloaded.",
        *,
        delay: float = 0,
        times: int = 1,
    ) -> None:
        """Queue an error in Google's format, e.g. 503 UNAVAILABLE."""
        with self._lock:
            self._replies.extend([Reply(status=status, error=message, delay=delay)] * times)

    # --- lifecycle ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeGemini:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        # A short poll interval: shutdown() waits for it at every teardown.
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        # Wakes handlers sleeping on a scripted delay, so none outlives the test.
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- serving -----------------------------------------------------------

    def _handle(
        self, request: Request, raw_body: bytes
    ) -> tuple[Reply | None, int, dict[str, Any]]:
        """(the scripted reply used, status, body) for one request."""
        with self._lock:
            self.requests.append(request)
        if request.method != "POST" or request.model is None:
            return None, 404, _error_body(404, f"no such method: {request.path}")
        if not request.api_key:
            return None, 403, _error_body(403, "Method doesn't allow unregistered callers.")
        if self.api_key is not None and request.api_key != self.api_key:
            return None, 400, _error_body(400, "API key not valid. Please pass a valid API key.")
        try:
            json.loads(raw_body)
        except ValueError:
            return None, 400, _error_body(400, "Invalid JSON payload received.")
        if not request.body.get("contents"):
            return (
                None,
                400,
                _error_body(400, "* GenerateContentRequest.contents: contents is not specified"),
            )
        if request.functions and request.generation_config.get("responseMimeType") == (
            "application/json"
        ):
            # The real API's answer to tools together with a JSON answer.
            return (
                None,
                400,
                _error_body(
                    400,
                    "Function calling with a response mime type: 'application/json' is unsupported",
                ),
            )
        schema = request.response_schema
        problem = _unknown_schema_field(schema, "generation_config.response_schema")
        if problem:
            return None, 400, _error_body(400, f"Invalid JSON payload received. {problem}")
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            return None, 400, _error_body(400, "fake gemini: no answer scripted for this request")
        if reply.status != 200:
            return reply, reply.status, _error_body(reply.status, reply.error)
        if reply.function_calls:
            offered = {f.get("name") for f in request.functions}
            unknown = [name for name, _ in reply.function_calls if name not in offered]
            if unknown:
                return None, 400, _error_body(400, f"fake gemini: {unknown} not offered")
            parts = [{"functionCall": {"name": n, "args": a}} for n, a in reply.function_calls]
            reply = Reply(
                text="", prompt_tokens=reply.prompt_tokens, output_tokens=reply.output_tokens
            )
        else:
            parts = [{"text": reply.text}] if reply.text is not None else []
        return (
            reply,
            200,
            {
                "candidates": [
                    {
                        **({"content": {"parts": parts, "role": "model"}} if parts else {}),
                        "finishReason": reply.finish_reason,
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": reply.prompt_tokens,
                    "candidatesTokenCount": reply.output_tokens,
                    "totalTokenCount": reply.prompt_tokens + reply.output_tokens,
                },
                "modelVersion": request.model,
                "responseId": f"fake-{len(self.requests)}",
            },
        )


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        fake: FakeGemini = self.server.fake  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        request = Request(
            method=method,
            path=self.path.split("?", 1)[0],
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body if isinstance(body, dict) else {},
        )
        reply, status, answer = fake._handle(request, raw or b"{}")
        if reply is not None and reply.delay and fake._closing.wait(reply.delay):
            return  # the fake is stopping; the client has long given up
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that timed out closed the connection: expected

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the requests are recorded; stderr stays quiet


@pytest.fixture
def gemini() -> Iterator[FakeGemini]:
    """A fresh fake Gemini API per test; `.base_url` for HttpOptions."""
    fake = FakeGemini().start()
    try:
        yield fake
    finally:
        fake.stop()
