"""The Starlette application: the pages, their data routes, the static files and basic authentication."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

try:
    import orjson
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:  # the ui extra is not installed
    from trainwire.errors import MissingExtraError

    raise MissingExtraError("ui", "trainwire's web UI") from exc

from trainwire.analysis.queries import QueryError
from trainwire.errors import StoreError
from trainwire.store.clickhouse import Store
from trainwire.ui.auth import Credentials
from trainwire.ui.routes import DataRoute, View
from trainwire.ui.views import VIEWS

STATIC = Path(str(resources.files("trainwire.ui") / "static"))


def plotly_js() -> Path:
    """plotly.js as the plotly Python package ships it (served to the browser from this machine)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class BasicAuth:
    """ASGI middleware: every request must carry the credentials, else 401 with a basic challenge."""

    def __init__(self, app: ASGIApp, credentials: Credentials):
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if not self.credentials.accepts(header):
                response = Response(
                    "authentication required\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="trainwire", charset="UTF-8"'},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _data_endpoint(store: Store, view: View, route: DataRoute) -> Any:
    async def endpoint(request: Request) -> Response:
        given = {key: request.query_params.getlist(key) for key in request.query_params}
        try:
            rows = await run_in_threadpool(route.rows, store, given)
        except QueryError as exc:
            return _Json({"error": str(exc)}, status_code=400)
        except StoreError as exc:  # the store failed, or refused the values given (a type out of range)
            return _Json({"error": str(exc)}, status_code=503 if exc.retriable else 400)
        return _Json({"query": route.query, "rows": rows}, headers={"Cache-Control": "no-store"})

    endpoint.__name__ = f"{view.name}_{route.name}"
    return endpoint


def create_app(store: Store, credentials: Credentials | None = None) -> ASGIApp:
    """The UI over ``store``; with ``credentials``, every request needs them."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def plotly(request: Request) -> Response:
        return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    async def views(request: Request) -> Response:
        return _Json([{"name": v.name, "title": v.title, "routes": [r.name for r in v.routes]} for v in VIEWS])

    routes: list[Any] = [
        Route("/", page),
        *(Route(f"/{view.name}", page) for view in VIEWS),
        Route("/api/views", views),
        *(
            Route(f"/api/{view.name}/{route.name}", _data_endpoint(store, view, route))
            for view in VIEWS
            for route in view.routes
        ),
        Route("/static/plotly.min.js", plotly),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app: ASGIApp = Starlette(routes=routes)
    if credentials is not None:
        app = BasicAuth(app, credentials)
    return app
