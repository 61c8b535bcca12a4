"""The webhook's calls to the API server for an alarm: create an Incident,
read it, patch its status. Asynchronous, on the webhook's event loop.

These are the hot path: every new alarm is one create, every paced batch
of repeats one status patch. The generated Kubernetes client made each call
in a worker thread, and its per-call work (parameter validation, a walk
over the body to sanitise it, the thread hand-off under the GIL) was about
a third of the webhook's CPU per alarm (bench/RESULTS.md). Here each call is
one request on a pooled aiohttp connection, its body serialised once.

Where and how to connect (the server, its CA, a client certificate, the
bearer token and its refresh, a proxy) is read from the same
`kubernetes.client.Configuration` the rest of the process uses, so the
webhook reaches the API server exactly as its other clients do: in a pod
with its ServiceAccount's token, re-read when it rotates, or with a
kubeconfig. Everything else the webhook asks of the API server (readiness,
the policies' watch) stays on the Kubernetes client.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp
from kubernetes import client
from kubernetes.client.rest import is_socks_proxy_url, should_bypass_proxies

from .. import __version__
from ..models import GROUP, VERSION


class ApiError(Exception):
    """The API server answered with an error status (the body says why)."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"API server answered {status}: {body[:500]}")
        self.status = status
        self.body = body


# Transport failures: no answer from the API server (refused, reset, timed out).
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class IncidentsApi:
    """Create, read and status-patch the Incidents of one namespace."""

    def __init__(
        self,
        configuration: client.Configuration,
        namespace: str,
        *,
        connections: int = 32,
        timeout: tuple[float, float] = (3.0, 10.0),
    ) -> None:
        """`connections`: at most this many requests in flight at once (the
        pool); `timeout`: seconds to connect, and to wait for each read."""
        self._configuration = configuration
        self._collection = (
            f"{configuration.host.rstrip('/')}/apis/{GROUP}/{VERSION}"
            f"/namespaces/{namespace}/incidents"
        )
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(sock_connect=timeout[0], sock_read=timeout[1])
        self._ssl = _ssl_context(configuration)
        self._proxy = _proxy(configuration)
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"incident-operator-webhook/{__version__}",
        }
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """The created Incident; ApiError 409 if it exists."""
        return await self._request("POST", self._collection, body, "application/json")

    async def get(self, name: str) -> dict[str, Any] | None:
        """The Incident as the API server has it now, or None if it does not exist."""
        try:
            return await self._request("GET", f"{self._collection}/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def patch_status_if_unchanged(
        self, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status, only if the Incident is still at
        `resource_version` (a precondition: the server answers 409 if anyone
        wrote since); the new Incident, or None when it changed meanwhile."""
        patch = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            return await self._request(
                "PATCH", f"{self._collection}/{name}/status", patch, "application/merge-patch+json"
            )
        except ApiError as error:
            if error.status == 409:
                return None
            raise

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _request(
        self, method: str, url: str, body: dict[str, Any] | None = None, media: str = ""
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        # As the Kubernetes client does per request: the token hook re-reads
        # a rotated ServiceAccount token.
        for setting in self._configuration.auth_settings().values():
            if setting["in"] == "header" and setting["value"]:
                headers[setting["key"]] = setting["value"]
        data = None
        if body is not None:
            headers["Content-Type"] = media
            data = json.dumps(body, separators=(",", ":"))
        async with self._session().request(
            method,
            url,
            data=data,
            headers=headers,
            proxy=self._proxy,
            proxy_headers=self._configuration.proxy_headers if self._proxy else None,
            server_hostname=self._configuration.tls_server_name or None,
        ) as answer:
            text = await answer.text()
            if answer.status >= 400:
                raise ApiError(answer.status, text)
            return json.loads(text)  # type: ignore[no-any-return]

    def _session(self) -> aiohttp.ClientSession:
        # One session per event loop (a test may run several loops in turn).
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl),
                timeout=self._timeout,
                # The proxy is the configuration's, as for the Kubernetes client.
                trust_env=False,
            )
            self._loop = loop
        return self._http


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(
        cafile=configuration.ssl_ca_cert, cadata=configuration.ca_cert_data
    )
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    return context


def _proxy(configuration: client.Configuration) -> str | None:
    proxy: str | None = configuration.proxy
    if not proxy or should_bypass_proxies(configuration.host, configuration.no_proxy or ""):
        return None
    if is_socks_proxy_url(proxy):
        raise ValueError(
            f"the webhook reaches the API server through HTTP proxies only, not {proxy!r}"
        )
    return proxy
