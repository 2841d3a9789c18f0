"""``loyalty-cdp privacy request|show|export``: data-subject requests from the command line.

With ``--target URL --key KEY`` the commands call a running server's API. Without, they run
the same service on the data directory itself, which is only safe while no server runs on
it (like ``replay``): the command opens the stores the server would (activation included:
the decision store, the outbox, the SMS STOP list, the audience exports), folds the log up
to its end first with the program's decisioning (as ``replay`` does: decisions are stored,
nothing is sent from the command), serves the request, and its changes are what the server
will load when it starts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from loyalty_cdp.bootstrap import (
    open_audit_log,
    open_decisioning_stage,
    open_event_log,
    open_processor,
    open_program,
    open_suppression,
)
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.settings import Settings

if TYPE_CHECKING:
    from loyalty_cdp.core.events import Event
    from loyalty_cdp.services.privacy import PrivacyService

app = typer.Typer(help="Data-subject requests: access, erasure, opt-outs, correction, ADMT access.",
                  no_args_is_help=True)

DataDir = typer.Option(None, "--data-dir", help="Data directory of a stopped server (default ./data).")
Target = typer.Option(None, "--target", help="URL of a running server (then --key is required).")
Key = typer.Option(None, "--key", help="API key with the privacy scope, for --target.")
TIMEOUT_S = 60.0


@contextmanager
def _service(data_dir: Path | None) -> Iterator[PrivacyService]:
    """The privacy service over a data directory, with a processor folded to the end of the log."""
    # Activation, segments and the privacy service pull in numpy and scipy (about a second): loaded here, only
    # when a command works on the data directory, so that other commands (and --target) start fast.
    from loyalty_cdp.adapters.privacy_requests import PrivacyRequestStore
    from loyalty_cdp.adapters.scorestore import ScoreStore
    from loyalty_cdp.api.metrics import Metrics
    from loyalty_cdp.services.activation import Activation
    from loyalty_cdp.services.privacy import PrivacyContext, PrivacyService
    from loyalty_cdp.services.segments import SegmentRegistry

    settings = Settings.from_env(data_dir=data_dir)
    program = open_program(settings)
    event_log = open_event_log(settings)
    suppression = open_suppression(settings)
    scores = ScoreStore(settings.data_dir)

    def emit(calls: list[dict[str, Any]]) -> None:
        processor.emit(calls)

    activation = Activation(settings, settings.program, emit, Metrics())
    segments = SegmentRegistry(program[1], activation.decisions, program=program[0], scores=scores)
    stage = open_decisioning_stage(settings, program, activation.decisions, scores, segments)
    processor = open_processor(settings, event_log, suppression=suppression, program=program, decisioning=stage)
    activation.attach_members(processor.view)
    requests = PrivacyRequestStore(settings.data_dir)
    audit = open_audit_log(settings)

    async def append(events: Sequence[Event]) -> None:
        event_log.append(events)
        processor.catch_up()

    try:
        processor.catch_up()
        yield PrivacyService(PrivacyContext(settings.data_dir, processor, event_log, scores, suppression, requests,
                                            audit, append, activation=activation))
    finally:
        for close in (audit.close, requests.close, lambda: asyncio.run(activation.close()), scores.close,
                      processor.close, suppression.close, event_log.close):
            close()


def _remote(method: str, target: str, key: str | None, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> Any:
    """Call a running server; an error answer is printed and ends the command (exit 2, or 1 for 5xx)."""
    if not key:
        raise InvalidInput("--key", "is required with --target: an API key with the privacy scope")
    import httpx  # only a call to a server needs it

    answer = httpx.request(method, target.rstrip("/") + path, json=body, timeout=TIMEOUT_S,
                           headers={"Authorization": f"Bearer {key}", **(headers or {})})
    payload = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    if answer.status_code >= 400:
        typer.echo(f"error: HTTP {answer.status_code}: {payload.get('message', answer.text[:200])}", err=True)
        raise typer.Exit(2 if answer.status_code < 500 else 1)
    return payload


def _print(document: Any, out: Path | None = None) -> None:
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"written to {out}")


def _corrections(pairs: list[str]) -> dict[str, Any] | None:
    if not pairs:
        return None
    corrections: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInput("--set", f"must be TRAIT=VALUE (VALUE as JSON, or text), got {pair[:60]!r}")
        try:
            corrections[name] = json.loads(value)
        except json.JSONDecodeError:
            corrections[name] = value
    return corrections


@app.command("request")
def request(
    kind: str = typer.Option(..., "--type", help="access, erasure, opt_out_sale, opt_out_admt, correction, "
                             "admt_access."),
    identifier_type: str = typer.Option(..., "--identifier-type", help="user_id, email, phone, card, anonymous_id, "
                                        "pos_customer_id, device_id or ext.<type>."),
    value: str = typer.Option(..., "--value", help="The identifier's value, in any usual form."),
    regime: str | None = typer.Option(None, "--regime", help="gdpr or ccpa (default: both; the earlier deadline)."),
    corrections: list[str] = typer.Option([], "--set", help="correction: TRAIT=VALUE (repeatable; VALUE may be JSON, "
                                          "null clears the trait)."),
    request_key: str | None = typer.Option(None, "--idempotency-key", help="Make the request idempotent; repeating "
                                           "a failed request runs it again."),
    data_dir: Path | None = DataDir,
    target: str | None = Target,
    key: str | None = Key,
) -> None:
    """Make a request and run it; print the request (status, deadline, result) as JSON."""
    body: dict[str, Any] = {"type": kind, "identifier": {"type": identifier_type, "value": value}}
    if regime is not None:
        body["regime"] = regime
    if (fixed := _corrections(corrections)) is not None:
        body["corrections"] = fixed
    if target is not None:
        headers = {} if request_key is None else {"Idempotency-Key": request_key}
        _print(_remote("POST", target, key, "/v1/privacy/requests", body, headers))
        return
    from loyalty_cdp.services.privacy import CLI_ACTOR  # heavy, as in _service: only on this path

    with _service(data_dir) as service:
        stored, _ = asyncio.run(service.submit(body, actor=CLI_ACTOR, request_key=request_key))
        _print(stored.view(_now()))


@app.command("show")
def show(
    request_id: str = typer.Argument(..., help="The request id (pr_...)."),
    data_dir: Path | None = DataDir,
    target: str | None = Target,
    key: str | None = Key,
) -> None:
    """Print a request: status, deadline, result."""
    if target is not None:
        _print(_remote("GET", target, key, f"/v1/privacy/requests/{request_id}"))
        return
    with _service(data_dir) as service:
        _print(service.get(request_id).view(_now()))


@app.command("export")
def export(
    request_id: str = typer.Argument(..., help="A completed access or admt_access request's id."),
    out: Path | None = typer.Option(None, "--out", help="Write the export to this file instead of stdout."),
    data_dir: Path | None = DataDir,
    target: str | None = Target,
    key: str | None = Key,
) -> None:
    """Print (or write) the export of a completed access or ADMT access request."""
    if target is not None:
        _print(_remote("GET", target, key, f"/v1/privacy/requests/{request_id}/export"), out)
        return
    with _service(data_dir) as service:
        _print(service.export(request_id), out)


def _now() -> int:
    return int(time.time() * 1000)
