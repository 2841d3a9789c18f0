"""Every error leaves the server as JSON naming the field and the reason; nothing leaks a traceback.

The OpenAPI document says so too: :func:`install` makes every operation document the error
answers that the shared machinery gives (400 for invalid parameters or bodies, 413 over a
body's size limit, 404 for an unknown resource in the path, 401, 403 and 429 for the key
every ``/v1/`` endpoint checks), with the body's schema, in place of FastAPI's 422 which
this server never sends. Routers document only their own answers (409, 503, ...); a
``/v1/`` route that takes no key (a signed link, a provider's webhook) declares
``openapi_extra={"security": []}`` and gets no 401, 403 or 429.
"""

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
_LOCATIONS = ("query", "path", "body", "header", "cookie")


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encode(content), status_code=status_code, headers=headers, media_type="application/json")


def error_body(exc: LoyaltyCdpError) -> dict[str, Any]:
    body: dict[str, Any] = {"success": False, "message": str(exc)}
    if isinstance(exc, InvalidInput):
        # An empty field stands for the input as a whole, which over HTTP is the request body.
        body["field"] = exc.field or "body"
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
    location = [str(part) for part in first.get("loc", ())]
    field = ".".join(part for part in location if part not in _LOCATIONS) or (location[0] if location else "body")
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
    _document_errors(app)


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error. `field` and `reason` are present for invalid input (400, 413); a batch "
                   "with invalid events lists each one in `errors` (the valid ones were stored).",
    "required": ["success", "message"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "The offending field, header or parameter"},
        "reason": {"type": "string"},
        "accepted": {"type": "integer", "description": "Batch: events stored"},
        "rejected": {"type": "integer", "description": "Batch: events rejected"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "field", "reason"],
                "properties": {"index": {"type": "integer"}, "messageId": {"type": ["string", "null"]},
                               "field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (`loyalty-cdp keys create`)"},
    "basic": {"type": "http", "scheme": "basic",
              "description": "The API key as user name, empty password (Segment's write key); ingest also "
                             "takes it as `writeKey` in the body"},
}
_KEYED_PREFIX = "/v1/"
_BODY_METHODS = ("post", "put", "patch")  # a body may come even where none is documented


def _document_errors(app: FastAPI) -> None:
    """Have ``app.openapi()`` document the shared error answers of every operation, whichever
    router added it (see the module docstring)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(generate())
        return app.openapi_schema or generate()

    app.openapi = openapi  # type: ignore[method-assign]


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Add the shared error answers to each operation of an OpenAPI ``document`` (in place)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    keyed = False
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            responses.pop("422", None)
            parameters = operation.get("parameters", [])
            has_body = "requestBody" in operation or method in _BODY_METHODS
            if parameters or has_body:
                _error(responses, "400", "Invalid input: the body names the field and the reason")
            if has_body:
                _error(responses, "413", "The body is over its size limit")
            if any(parameter.get("in") == "path" for parameter in parameters):
                _error(responses, "404", "Nothing found under this path")
            # A public route (a signed link, a provider's webhook) says so with ``security: []``.
            if path.startswith(_KEYED_PREFIX) and operation.get("security") != []:
                keyed = True
                operation.setdefault("security", [{"bearer": []}, {"basic": []}])
                _error(responses, "401", "No valid API key (missing, unknown or revoked)",
                       {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}})
                _error(responses, "403", "The API key lacks the scope this endpoint needs")
                _error(responses, "429", "Over the key's rate limit (or a full ingest queue): retry after "
                                         "Retry-After seconds",
                       {"Retry-After": {"schema": {"type": "integer"}, "required": True}})
            for status, response in responses.items():  # a router's own errors (409, 503, ...) too
                if status[:1] in ("4", "5") and isinstance(response, dict):
                    response.setdefault("content", _ERROR_CONTENT)
    if keyed:
        components.setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
    return document


def _error(responses: dict[str, Any], status: str, description: str,
           headers: dict[str, Any] | None = None) -> None:
    """Document an error answer with the error body's schema, keeping a router's own description."""
    response = responses.setdefault(status, {"description": description})
    response.setdefault("content", _ERROR_CONTENT)
    if headers:
        response.setdefault("headers", {}).update(headers)
