"""The saga dashboard: a static page (HTML, CSS, vanilla JS, no build step) served by the
query service, which polls the read API and the analytics proxy from the browser.

Routes: ``/`` redirects to ``/dashboard`` (the page); ``/dashboard/config`` tells the page
what it cannot know by itself (the trace link template, the poll interval);
``/dashboard/static/<file>`` serves the page's assets from ``services/query/static``;
``/api/v1/analytics`` proxies the analytics service (see ``analytics_proxy``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel, Field

from services.query import analytics_proxy
from services.query.analytics_proxy import AnalyticsClient

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything the page needs comes from this origin; no inline script or style.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every load: a redeploy's assets show at once, no stale JS against a new API.
    "Cache-Control": "no-cache",
}
POLL_MS = 2000


class DashboardConfig(BaseModel):
    trace_url_template: str = Field(
        description="A trace's link, with {trace_id} to fill in; empty: no links"
    )
    poll_ms: int = Field(description="How often the page refreshes")


def routes(analytics: AnalyticsClient, *, trace_url_template: str) -> APIRouter:
    router = APIRouter()
    # Listed once at start-up: only these names are served, so no path can escape the folder.
    assets = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}
    config = DashboardConfig(trace_url_template=trace_url_template, poll_ms=POLL_MS)

    def asset(name: str) -> FileResponse:
        path = assets.get(name)
        if path is None:
            raise HTTPException(404, f"no dashboard asset {name}")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)

    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/dashboard", status_code=307)

    @router.get("/dashboard", include_in_schema=False)
    async def page() -> FileResponse:
        return asset("index.html")

    @router.get("/dashboard/config", response_model=DashboardConfig, tags=["dashboard"])
    async def get_config() -> DashboardConfig:
        """What the dashboard page needs to know from the service's settings."""
        return config

    @router.get("/dashboard/static/{name}", include_in_schema=False)
    async def static(name: Annotated[str, PathParam(max_length=100)]) -> FileResponse:
        return asset(name)

    router.include_router(analytics_proxy.routes(analytics), prefix="/api/v1")
    return router
