"""What the routes depend on: the process's services, the caller's tenant, the request's JSON body.

Each is a FastAPI dependency, so a test replaces one (``app.dependency_overrides``) and drives the
routes in process: :func:`current_tenant` with a fixed tenant needs no Redis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from producer import broker
from producer.api import resources
from producer.api.errors import ApiError
from producer.api.live import Hub
from producer.api.metrics import ApiMetrics
from producer.broker.events import Announcer
from producer.client import Client
from producer.core.settings import Settings
from producer.tenants import KeysSource, Tenant, take_token

#: How long the events reader's XREAD blocks (s); its connection's timeout is 5 s longer.
HUB_BLOCK_S = 5.0


@dataclass
class Services:
    """One API process's connections and helpers, made once by :meth:`build`.

    Attributes:
        settings: The deployment settings.
        keys: The API keys and their limits, as the keys file says now.
        client: The job client (its publish retry is short: a caller retries a 503 better).
        redis: The broker's Redis.
        announcer: Publishes job events.
        views: Renders jobs, batches and uploads as JSON.
        metrics: The API's Prometheus metrics.
        hub: The process's one reader of the events stream, shared by its SSE streams.
    """

    settings: Settings
    keys: KeysSource
    client: Client
    redis: Any
    announcer: Announcer
    views: resources.Views
    metrics: ApiMetrics
    hub: Hub

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Connect for ``settings``.

        Raises:
            ConfigError: the keys document (``STYLEQUEUE_API_KEYS_FILE``/``_KEYS``) is wrong.
        """
        keys = KeysSource(settings)
        client = Client(settings, publish_retry_s=2.0)
        redis = client.redis
        views = resources.Views(settings, redis, broker.of(settings, 2.0, backend=True))
        hub = Hub(broker.of(settings, HUB_BLOCK_S + 5.0), int(HUB_BLOCK_S * 1000), settings.api_max_streams_per_tenant)
        metrics = ApiMetrics(redis, streams_open=lambda: hub.open_streams)
        return cls(settings, keys, client, redis, Announcer(redis, settings), views, metrics, hub)


def services(request: Request) -> Services:
    """The process's :class:`Services` (made by ``create_app``)."""
    services: Services = request.app.state.services
    return services


def current_tenant(request: Request) -> Tenant:
    """The caller's tenant from ``Authorization: Bearer <key>``, one request taken from its rate.

    Raises:
        ApiError: 401 without a valid key, 429 over the tenant's rate (with ``Retry-After``).
    """
    s = services(request)
    tenant = s.keys.current().authenticate(request.headers.get("authorization"))
    if tenant is None:
        raise ApiError(
            401,
            "Unauthorized",
            "a valid API key is needed: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    wait = take_token(s.redis, tenant)
    if wait > 0:
        raise ApiError(
            429,
            "RateLimited",
            f"over {tenant.rate_per_s:g} requests/s (burst {tenant.burst})",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )
    return tenant


async def json_body(request: Request) -> Any:
    """The request's JSON body, at most ``STYLEQUEUE_API_MAX_BODY_BYTES`` (read before the route runs).

    Raises:
        ApiError: 413 over the limit, 400 not JSON.
    """
    settings = services(request).settings
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.api_max_body_bytes:
        raise ApiError(413, "TooLarge", f"a body of {declared} bytes is over {settings.api_max_body_bytes}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > settings.api_max_body_bytes:
            raise ApiError(413, "TooLarge", f"the body is over {settings.api_max_body_bytes} bytes")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ApiError(400, "MalformedJSON", f"the body is not JSON: {e}") from None


#: A route's JSON body (read in the event loop, before the route runs in a thread).
JsonBody = Annotated[Any, Depends(json_body)]
#: The process's services.
ServicesDep = Annotated[Services, Depends(services)]
#: The authenticated caller's tenant.
TenantDep = Annotated[Tenant, Depends(current_tenant)]
