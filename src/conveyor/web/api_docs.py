"""/docs (Swagger UI) and /redoc (ReDoc): the API reference, served from /static.

FastAPI's own pages load both renderers from a CDN and start them with an inline script,
so they are blank offline and break the Content-Security-Policy. These pages load the
copies vendored in ``static/vendor/`` (see its README) and start them from static files;
the page tells the script where the OpenAPI document is in a ``data-`` attribute.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
{head}
</head>
<body class="api-docs">
<div id="{element}" data-openapi-url="{openapi_url}"></div>
{scripts}
</body>
</html>
"""


def _page(title: str, element: str, openapi_url: str, head: str, scripts: str) -> str:
    return _PAGE.format(
        title=escape(title),
        element=element,
        openapi_url=escape(openapi_url),
        head=head,
        scripts=scripts,
    )


def make_router(app_title: str, openapi_url: str) -> APIRouter:
    """A router serving /docs and /redoc for the document at ``openapi_url``."""
    router = APIRouter(include_in_schema=False)
    swagger = _page(
        f"{app_title} API · Swagger UI",
        "swagger-ui",
        openapi_url,
        '<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">',
        '<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>\n'
        '<script src="/static/api-docs/swagger-init.js"></script>',
    )
    redoc = _page(
        f"{app_title} API · ReDoc",
        "redoc",
        openapi_url,
        "",
        '<script src="/static/vendor/redoc/redoc.standalone.js"></script>\n'
        '<script src="/static/api-docs/redoc-init.js"></script>',
    )

    @router.get("/docs", response_class=HTMLResponse)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger)

    @router.get("/redoc", response_class=HTMLResponse)
    async def redoc_page() -> HTMLResponse:
        return HTMLResponse(redoc)

    @router.get("/openapi.json")
    async def openapi_at_root(request: Request) -> JSONResponse:
        # Where tools look first; the same document as under the API prefix.
        return JSONResponse(request.app.openapi())

    return router
