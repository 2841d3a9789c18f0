"""Fuzz the whole HTTP API from its own OpenAPI document (schemathesis), with a key holding every scope.

The operations come from ``GET /openapi.json`` of a real server, so an endpoint added by any
router is fuzzed without touching this file. Every response must pass: no 5xx ever; the
status code, content type, headers and body conform to what the document declares for the
operation; and every 4xx is the error body of ``api/errors.py`` (``success`` false and a
message), where invalid input (400, 413) names the offending field and the reason, or, for a
batch, lists each rejected event with its field.

Bounded and reproducible: a fixed number of examples per operation and generation mode
(positive and negative), derandomized generation, no example database, no deadline; about a
minute on a 2-core machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis
import schemathesis
from fastapi.routing import APIRoute
from schemathesis import APIOperation, BaseSchema, Case, CheckContext, GenerationMode, Response
from schemathesis.core.result import Ok

from loyalty_cdp.api.app import create_app
from loyalty_cdp.settings import Settings
from loyalty_cdp.testing import ServerProcess

ALL_SCOPES = "ingest,read,loyalty,admin,privacy"
MAX_EXAMPLES = 25  # per operation and generation mode (positive, negative)
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
INPUT_ERRORS = (400, 413)  # InvalidInput and PayloadTooLarge: the body names the field


def errors_name_the_field(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx is ``{"success": false, "message": ...}``; invalid input also names the field."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body: Any = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} body is not JSON: {response.text[:200]!r}") from None
    assert isinstance(body, dict), f"{response.status_code} body is not an object: {body!r}"
    assert body.get("success") is False, f"{response.status_code} body lacks success=false: {body!r}"
    assert isinstance(body.get("message"), str) and body["message"], f"no message: {body!r}"
    if response.status_code in INPUT_ERRORS:
        if "errors" in body:  # a batch whose valid events were stored: each rejected one is listed
            assert body["errors"], f"an empty list of rejected events: {body!r}"
            for error in body["errors"]:
                assert error.get("field") and error.get("reason"), f"a rejected event without field/reason: {body!r}"
        else:
            assert isinstance(body.get("field"), str) and body["field"], f"the field is not named: {body!r}"
            assert isinstance(body.get("reason"), str) and body["reason"], f"no reason: {body!r}"
    return True


def load_schema(server: ServerProcess) -> BaseSchema:
    """The server's own document, with a key that holds every scope sent on every request."""
    key = server.create_key(ALL_SCOPES)
    config = schemathesis.Config.from_dict({
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "headers": {"Authorization": f"Bearer {key}"},
    })
    return schemathesis.openapi.from_url(server.url + "/openapi.json", config=config)


def fuzz(operation: APIOperation, mode: GenerationMode) -> None:
    """Send ``MAX_EXAMPLES`` generated requests to ``operation``; raise on the first failed check."""

    @hypothesis.settings(operation.schema.config.get_hypothesis_settings(operation=operation),
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Case) -> None:
        case.call_and_validate(additional_checks=[errors_name_the_field])

    run()


def test_every_operation_answers_within_its_contract(server: ServerProcess) -> None:
    schema = load_schema(server)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document is invalid: {result.err()}"
        operations.append(result.ok())
    assert len(operations) >= 20, [operation.label for operation in operations]
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode)
            except hypothesis.errors.Unsatisfiable:
                # Nothing in the operation can be made invalid (no body, only free-form strings in
                # the path): there is no negative input to send. Positive input never gets here.
                if mode is GenerationMode.POSITIVE:
                    raise
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is a BaseExceptionGroup
                failures.append(f"{operation.label} ({mode.value} data): {exc}")
    assert not failures, f"{len(failures)} failing operation(s):\n\n" + "\n\n".join(failures)


def test_the_document_lists_every_route_of_the_app(tmp_path: Path) -> None:
    """The fuzz run covers what the document lists, so every route of the app must be in it
    (a route hidden with ``include_in_schema=False`` would escape the fuzzer)."""
    app = create_app(Settings(data_dir=tmp_path))  # stores open only when the app starts: none here
    document = app.openapi()
    listed = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    served = {(method, route.path) for route in app.routes if isinstance(route, APIRoute)
              for method in route.methods}
    assert served - listed == set(), "routes missing from the OpenAPI document, so never fuzzed"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], f"{method} {path} documents a 422 the server never sends"
            if path.startswith("/v1/") and operation.get("security") != []:  # [] marks a public route
                assert {"401", "403", "429"} <= operation["responses"].keys(), f"{method} {path}"
