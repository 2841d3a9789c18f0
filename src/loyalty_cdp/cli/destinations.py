"""``loyalty-cdp destinations list|test|dead-letters|replay``: check and operate the configured destinations."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.settings import Settings

if TYPE_CHECKING:  # the destination modules (httpx, phonenumbers) load only when a command runs
    from loyalty_cdp.adapters.destinations.base import Destination, Receipt
    from loyalty_cdp.adapters.destinations.config import DestinationConfig
    from loyalty_cdp.adapters.outbox import Outbox
    from loyalty_cdp.core.messages import OutboundMessage

app = typer.Typer(help="Check and operate the destinations declared in the program file.", no_args_is_help=True)

ConfigOption = typer.Option(None, "--config", help="Program file (default: the example retail program).")
DataDir = typer.Option(None, "--data-dir", help="Data directory (default ./data or $LOYALTY_CDP_DATA_DIR).")


def _configs(config: Path | None, data_dir: Path | None = None) -> list[DestinationConfig]:
    """As the server reads them: the example program's demo secrets when unset, audience folders under the data dir."""
    from loyalty_cdp.services.activation import program_destinations

    return program_destinations(config, Settings.from_env(data_dir=data_dir).data_dir)


def test_message(config: DestinationConfig, recipient: str | None, now_ms: int) -> OutboundMessage:
    """A short message that names itself as a test, for the destination's channel."""
    from loyalty_cdp.core.messages import EMAIL, PUSH, SMS, OutboundMessage

    if config.channel in (EMAIL, SMS, PUSH) and not recipient:
        kind = {EMAIL: "an email address", SMS: "an E.164 phone number", PUSH: "a device token"}[config.channel]
        raise InvalidInput("--to", f"a {config.type} test needs a recipient: {kind}")
    text = f"This is a test message from loyalty-cdp through the destination {config.name}."
    return OutboundMessage(
        message_id=f"test_{uuid.uuid4().hex}", decision_id="destinations-test", user_id="loyalty-cdp-test",
        destination=config.name, channel=config.channel, recipient=recipient or "", created_at=now_ms,
        subject="loyalty-cdp test message", html=f"<p>{text}</p>", text=text, body=text, data={"test": "true"},
    )


async def _send_once(destination: Destination, message: OutboundMessage, timeout_s: float) -> Receipt:
    from loyalty_cdp.adapters.destinations.base import SendFailure

    try:
        async with asyncio.timeout(timeout_s):
            return await destination.send(message, int(time.time() * 1000))
    except TimeoutError:
        raise SendFailure(f"timed out after {timeout_s:g}s") from None
    finally:
        await destination.aclose()


@app.command("list")
def list_destinations(config: Path | None = ConfigOption, data_dir: Path | None = DataDir) -> None:
    """List the configured destinations: name, type, channel and the consent each needs."""
    for item in _configs(config, data_dir):
        typer.echo(f"{item.name:<24} {item.type:<9} {item.channel:<9} consent={item.consent_purpose or 'none'}")


@app.command("test")
def test_destination(
    name: str = typer.Argument(..., help="The destination's name in the program file."),
    to: str | None = typer.Option(None, "--to", help="Recipient: email, E.164 phone or device token."),
    config: Path | None = ConfigOption,
    data_dir: Path | None = DataDir,
) -> None:
    """Send one test message through NAME now (no outbox, no consent check) and print the outcome."""
    from loyalty_cdp.adapters.destinations.audience import audience_destination
    from loyalty_cdp.adapters.destinations.base import SendFailure
    from loyalty_cdp.adapters.destinations.config import find_destination
    from loyalty_cdp.adapters.destinations.factory import open_destination

    settings = Settings.from_env(data_dir=data_dir)
    chosen = find_destination(_configs(config, data_dir), name)
    now_ms = int(time.time() * 1000)
    if chosen.type == "audience":
        export = audience_destination(chosen).export("loyalty-cdp-test", [], frozenset(), now_ms)
        typer.echo(f"wrote {export.full} under {chosen.settings.target}")
        return
    message = test_message(chosen, to, now_ms)
    destination = open_destination(chosen, settings.data_dir)
    try:
        receipt = asyncio.run(_send_once(destination, message, chosen.delivery.timeout_s))
    except SendFailure as exc:
        typer.echo(f"{name}: not sent ({type(exc).__name__}): {exc.reason}", err=True)
        raise typer.Exit(1) from None
    provider = f" (provider id {receipt.provider_id})" if receipt.provider_id else ""
    typer.echo(f"{name}: sent {message.message_id}{provider}")


def _outbox(data_dir: Path | None) -> Outbox:
    from loyalty_cdp.adapters.outbox import OUTBOX_FILE, Outbox

    return Outbox(Settings.from_env(data_dir=data_dir).data_dir / OUTBOX_FILE)


@app.command("dead-letters")
def dead_letters(
    name: str | None = typer.Argument(None, help="Only this destination's dead letters."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many, newest first."),
    data_dir: Path | None = DataDir,
) -> None:
    """List messages that gave up, with the reason and the number of attempts."""
    outbox = _outbox(data_dir)
    try:
        letters = outbox.dead_letters(name, limit)
    finally:
        outbox.close()
    for letter in letters:
        when = datetime.fromtimestamp(letter.failed_at / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        typer.echo(f"{letter.message.message_id}  {letter.message.destination}  {when}  "
                   f"attempts={letter.attempts}  {letter.reason}")


@app.command("replay")
def replay(
    name: str | None = typer.Argument(None, help="Only this destination's dead letters."),
    message_ids: list[str] | None = typer.Option(None, "--message-id", help="Only these messages (repeatable)."),
    data_dir: Path | None = DataDir,
) -> None:
    """Put dead letters back in the outbox; a running server sends them within a second."""
    outbox = _outbox(data_dir)
    try:
        moved = outbox.replay(int(time.time() * 1000), name, message_ids or None)
    finally:
        outbox.close()
    typer.echo(f"replayed {moved} message(s)")
