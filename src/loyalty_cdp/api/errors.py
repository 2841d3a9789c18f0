"""Every error leaves the server as JSON naming the field and the reason; nothing leaks a traceback."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from loyalty_cdp.errors import InvalidInput, LoyaltyCdpError, Overloaded

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(content), status_code=status_code, headers=headers, media_type="application/json")


def error_body(exc: LoyaltyCdpError) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "message": str(exc)}
    if isinstance(exc, InvalidInput):
        body["field"] = exc.field
        body["reason"] = exc.reason
    if exc.details:
        body.update(exc.details)
    return body


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoyaltyCdpError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
    if exc.http_status == 401:
        headers = {"WWW-Authenticate": 'Basic realm="loyalty-cdp", Bearer'}
    if exc.http_status >= 500:
        log.error("request failed: %s", exc)
    return json_response(error_body(exc), exc.http_status, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    field = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body"))
    return json_response(
        {"success": False, "message": f"{field}: {first['msg']}", "field": field, "reason": first["msg"]},
        400,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return json_response({"success": False, "message": str(exc.detail)}, exc.status_code, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return json_response({"success": False, "message": "internal error; see the server log"}, 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoyaltyCdpError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
