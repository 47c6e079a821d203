"""The web console's pages: ``GET /`` (the single page) and ``GET /console/{name}`` (its
scripts, styles and icon). They hold no privileges: the page signs in with an API key and
calls the public API like any client (see ``appliance/web/console/``)."""

from __future__ import annotations

from aiohttp import web

from appliance.errors import NotFound
from appliance.web.console_assets import INDEX, SECURITY_HEADERS, Asset
from appliance.web.openapi import Operation, Param
from appliance.web.state import CONSOLE

routes = web.RouteTableDef()


def _serve(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache",
               "Vary": "Accept-Encoding"}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body, headers["Content-Encoding"] = asset.gzipped, "gzip"
    headers["Content-Type"] = asset.content_type
    return web.Response(body=body, headers=headers)


def _asset(request: web.Request, name: str) -> Asset:
    console = request.app[CONSOLE]
    if not console.enabled:
        raise NotFound("the web console is off on this server (start it with "
                       "--console true)")
    asset = console.get(name)
    if asset is None:
        raise NotFound(f"no console file {name!r}")
    return asset


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return _serve(request, _asset(request, INDEX))


@routes.get("/console/{name}")
async def console_file(request: web.Request) -> web.Response:
    return _serve(request, _asset(request, request.match_info["name"]))


OPERATIONS = (
    Operation("GET", "/", "the web console (when it is on)", auth="none", errors=(404,),
              media=("text/html",)),
    Operation("GET", "/console/{name}", "the console's scripts, styles and icon", auth="none",
              params=(Param("name", "path", {"type": "string",
                                             "pattern": "^[A-Za-z0-9_-]+[.][a-z]+$"},
                            required=True),),
              errors=(404,), media=("text/javascript", "text/css", "image/svg+xml")),
)
