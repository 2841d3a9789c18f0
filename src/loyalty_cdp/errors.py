"""The one root of every error loyalty-cdp raises on purpose; edges map them to HTTP and exit codes."""

from __future__ import annotations


class LoyaltyCdpError(Exception):
    """Root of the hierarchy. ``http_status`` and ``exit_code`` tell the edges how to report it;
    ``details`` (JSON-ready) are added to the HTTP error body."""

    http_status = 500
    exit_code = 1
    details: dict[str, object] | None = None


class InvalidInput(LoyaltyCdpError):
    """Input that breaks a rule; ``field`` names the offending field, ``reason`` says why."""

    http_status = 400
    exit_code = 2

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


class PayloadTooLarge(InvalidInput):
    http_status = 413


class ConfigError(InvalidInput):
    """A configuration file that cannot be used; the message names file, line and field."""


class NotFound(LoyaltyCdpError):
    http_status = 404
    exit_code = 2


class Conflict(LoyaltyCdpError):
    http_status = 409
    exit_code = 2


class Unauthorized(LoyaltyCdpError):
    http_status = 401
    exit_code = 2


class Forbidden(LoyaltyCdpError):
    http_status = 403
    exit_code = 2


class Overloaded(LoyaltyCdpError):
    """The bounded ingest queue is full; the client should retry after ``retry_after`` seconds."""

    http_status = 429

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(f"ingest queue is full, retry after {retry_after}s")
        self.retry_after = retry_after


class StorageUnavailable(LoyaltyCdpError):
    """A store or bus the system depends on cannot be reached."""

    http_status = 503
