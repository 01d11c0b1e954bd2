"""The dashboard's Starlette app: the page, its JSON endpoints, server-sent events and ``/metrics``.

Every route is a read (GET): the dashboard changes nothing. With a token, every route but ``/static`` (the
vendored JS and CSS, no data) and ``/healthz`` needs ``Authorization: Bearer <token>`` or ``?token=<token>``
(EventSource cannot send headers, so the page passes it in the query).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cloud_sync.dashboard.data import FleetData

STATIC = Path(__file__).resolve().parent / "static"
SSE_POLL_S = 0.25  # how often the events stream looks for a change: well within the 5 s an operator waits
SSE_HEARTBEAT_S = 15.0


def _dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), default=str)


def build_app(data: FleetData, token: str | None = None, closing: Any = None) -> Any:
    """The ASGI app over ``data``; ``closing`` (a ``threading.Event``) ends open event streams."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.types import ASGIApp, Receive, Scope, Send

    from cloud_sync.dashboard.metrics import FleetCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(data))
    open_paths = ("/static/", "/healthz")

    class TokenMiddleware:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if token and scope["type"] == "http" and not scope["path"].startswith(open_paths):
                request = Request(scope)
                given = request.query_params.get("token", "")
                header = request.headers.get("authorization", "")
                if header.lower().startswith("bearer "):
                    given = header[7:].strip()
                if not hmac.compare_digest(given.encode(), token.encode()):
                    response = PlainTextResponse(
                        "unauthorized: pass the dashboard's token as 'Authorization: Bearer TOKEN'"
                        " or ?token=TOKEN\n",
                        status_code=401, headers={"WWW-Authenticate": "Bearer"},
                    )
                    await response(scope, receive, send)
                    return
            await self.app(scope, receive, send)

    def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    def fleet(request: Request) -> Response:
        return Response(_dumps(data.fleet()), media_type="application/json")

    def device(request: Request) -> Response:
        doc = data.device(request.path_params["device"])
        if doc is None:
            return JSONResponse({"error": f"no device {request.path_params['device']!r}"}, status_code=404)
        return Response(_dumps(doc), media_type="application/json")

    def rollout(request: Request) -> Response:
        return Response(_dumps(data.rollout()), media_type="application/json")

    def snapshot(request: Request) -> Response:
        params = request.path_params
        label = request.query_params.get("label", "")
        jpeg = data.store.snapshot(params["device"], params["source"], label)
        if jpeg is None:
            return PlainTextResponse("no such snapshot\n", status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            seen: tuple[int, float] = (-1, -1.0)
            beat = time.monotonic()
            yield "retry: 1000\n\n"
            while closing is None or not closing.is_set():
                now = (data.live.version, data.counts.refreshed)
                if now != seen:
                    seen = now
                    doc = await asyncio.to_thread(data.fleet)
                    yield f"event: fleet\ndata: {_dumps(doc)}\n\n"
                    beat = time.monotonic()
                elif time.monotonic() - beat > SSE_HEARTBEAT_S:
                    yield ": keep-alive\n\n"
                    beat = time.monotonic()
                await asyncio.sleep(SSE_POLL_S)

        return StreamingResponse(
            stream(), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    routes = [
        Route("/", index),
        Route("/api/fleet", fleet),
        Route("/api/devices/{device}", device),
        Route("/api/devices/{device}/snapshots/{source}", snapshot),
        Route("/api/rollout", rollout),
        Route("/api/events", events),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(TokenMiddleware)])
