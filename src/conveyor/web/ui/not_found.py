"""A page for addresses that match no route, when a browser asks: Starlette's default is
the JSON ``{"detail": "Not Found"}``, a page without a title or language that a screen
reader cannot place and that offers no way back. API clients keep the JSON."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException

from conveyor.web.ui.base import render


def _wants_page(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/static/")):
        return False
    return "text/html" in request.headers.get("accept", "")


async def _handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code != 404 or not _wants_page(request):
        return await http_exception_handler(request, exc)
    reason = f"There is no page at {request.url.path}."
    return render(request, "error.html", {"reason": reason, "status": 404}, status_code=404)


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _handler)
