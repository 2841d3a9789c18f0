"""Activation: turns send decisions into outbound messages and runs the destinations in the server.

:class:`Activation` is built once per server from the program's ``destinations:`` section
(``docs/destinations.md``). It owns

- the outbox (``<data-dir>/outbox.db``, where the decision store keeps decisions too) and the
  :class:`~loyalty_cdp.services.dispatcher.Dispatcher` that drains it, one lane per
  destination, with consent asked again at send time;
- :meth:`Activation.messages_for`, called by the decisioning stage in the processor thread for
  every decision: a ``send`` decision becomes one message per configured destination of its
  channel, addressed from the member's profile, plus one per webhook destination;
- the forwarding of delivery-status events (``Message Sent``/``Delivered``/``Failed``/``Bounced``)
  into the event log through ``append``;
- the periodic retail-media audience export of every segment, without members who have not
  allowed sale/sharing;
- what the public email and SMS endpoints need: the signing keys of tracking links, the
  Twilio auth tokens for ``X-Twilio-Signature``, the STOP list, and :meth:`record` to append
  the events they report.

Consent is read under the strict default policy (nothing assumed without a record), like the
decisioning stage and the offers API, from the member view the server attaches
(``members``): a withdrawal between the decision and the send holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import html
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from loyalty_cdp.adapters.decisionstore import DecisionStore
from loyalty_cdp.adapters.destinations.audience import (
    AudienceDestination,
    AudienceMember,
    AudienceSettings,
    audience_destination,
)
from loyalty_cdp.adapters.destinations.base import DeliveryPolicy, Destination
from loyalty_cdp.adapters.destinations.config import DestinationConfig, load_destinations
from loyalty_cdp.adapters.destinations.email_tracking import TrackingHit, TrackingLinks, tracking_call
from loyalty_cdp.adapters.destinations.factory import open_destination, sms_opt_out_store
from loyalty_cdp.adapters.destinations.smtp import SmtpSettings
from loyalty_cdp.adapters.destinations.twilio import TwilioSettings
from loyalty_cdp.adapters.outbox import OUTBOX_FILE, Outbox
from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT_S
from loyalty_cdp.core.consent import (
    EMAIL_MARKETING,
    SALE_SHARING,
    STRICT_POLICY,
    ConsentUpdate,
    DefaultPolicy,
    consent_update_call,
)
from loyalty_cdp.core.consent import SMS as SMS_PURPOSE
from loyalty_cdp.core.decisioning import Decision
from loyalty_cdp.core.events import Event
from loyalty_cdp.core.identifiers import EMAIL as EMAIL_KIND
from loyalty_cdp.core.identifiers import PHONE as PHONE_KIND
from loyalty_cdp.core.identifiers import USER_ID, normalise_identifier, normalise_phone
from loyalty_cdp.core.messages import (
    EMAIL,
    MESSAGE_SENT,
    PUSH,
    SMS,
    WEBHOOK,
    OutboundMessage,
    message_id_for,
    status_call,
    validate_message,
)
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.segments import allowed_consents
from loyalty_cdp.errors import InvalidInput, LoyaltyCdpError, StorageUnavailable
from loyalty_cdp.services.dispatcher import Dispatcher, LaneStats
from loyalty_cdp.settings import Settings

if TYPE_CHECKING:
    from loyalty_cdp.api.metrics import Metrics

log = logging.getLogger(__name__)

Append = Callable[[list[dict[str, Any]]], None]
DEFAULT_REGION = "US"
# How often every segment is exported to each audience destination (seconds; 0 = never).
AUDIENCE_EVERY_VARIABLE = "LOYALTY_CDP_AUDIENCE_EVERY_S"
DEFAULT_AUDIENCE_EVERY_S = 3600.0
FIRST_AUDIENCE_EXPORT_S = 10.0  # after start: the processor has loaded its members by then
# Secrets of the example program's destinations (local sinks only): used when the variable is not set.
EXAMPLE_SECRETS: Mapping[str, str] = {
    "LOYALTY_CDP_TWILIO_AUTH_TOKEN": "example-twilio-auth-token",
    "LOYALTY_CDP_FCM_ACCESS_TOKEN": "example-fcm-access-token",
    "LOYALTY_CDP_WEBHOOK_SECRET": "example-webhook-secret",
}
TRACKING_SECRET_VARIABLE = "LOYALTY_CDP_TRACKING_SECRET"
PUSH_TOKEN_TRAITS = ("push_token", "pushToken", "fcm_token", "device_token", "deviceToken")
STATUS_PROPERTIES = ("type", "userId", "event", "properties", "timestamp", "messageId", "context")
_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_SENT_SCHEMA = """CREATE TABLE IF NOT EXISTS activation_sent (
    message_id  TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    channel     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    sent_at     INTEGER NOT NULL
)"""
SENT_KEPT_MS = 30 * 86_400_000  # delivery callbacks later than this are ignored


class MemberDirectory(Protocol):
    """What activation reads about members: the processor's member view."""

    def find(self, kind: str, value: str) -> str | None: ...

    def profile(self, member_id: str) -> Profile | None: ...


@dataclass(frozen=True)
class SentMessage:
    """What a delivery callback needs to report on a message the dispatcher sent (no personal data)."""

    message_id: str
    decision_id: str
    destination: str
    channel: str
    created_at: int
    attempts: int


def _now_ms() -> int:
    return int(time.time() * 1000)


def _trait(profile: Profile, *names: str) -> Any:
    for name in names:
        trait = profile.traits.get(name)
        if trait is not None and trait.value not in (None, ""):
            return trait.value
    return None


def email_address(profile: Profile) -> str | None:
    """The member's email: the latest ``email`` trait when valid, else the first email identity."""
    value = _trait(profile, "email")
    if isinstance(value, str):
        normal = normalise_identifier(EMAIL_KIND, value)
        if normal is not None:
            return normal
    found = profile.identities.get(EMAIL_KIND) or []
    return found[0] if found else None


def phone_number(profile: Profile, region: str | None = DEFAULT_REGION) -> str | None:
    """The member's phone in E.164: the latest ``phone`` trait when valid, else the first phone identity."""
    value = _trait(profile, "phone")
    if isinstance(value, str):
        normal = normalise_phone(value, region)
        if normal is not None:
            return normal
    found = profile.identities.get(PHONE_KIND) or []
    return found[0] if found else None


def push_token(profile: Profile) -> str | None:
    """The member's app push registration token (trait ``push_token`` as the app's identify sets it)."""
    value = _trait(profile, *PUSH_TOKEN_TRAITS)
    if isinstance(value, str) and value.strip() and not any(c.isspace() for c in value.strip()):
        return value.strip()
    return None


def member_timezone(profile: Profile) -> str | None:
    value = _trait(profile, "timezone")
    if not isinstance(value, str):
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return value


def email_html(subject: str, body: str, cta: str | None, unsubscribe: str | None) -> str:
    """The HTML part of an offer email: the rendered subject and body, links kept clickable.

    The text is the offer's template rendered for this member (escaped here); bare URLs in it
    become links, so the click redirect can track them.
    """
    def paragraph(text: str) -> str:
        escaped, at = [], 0
        for match in _URL_IN_TEXT.finditer(text):
            escaped.append(html.escape(text[at:match.start()]))
            url = html.escape(match.group(0))
            escaped.append(f'<a href="{url}">{url}</a>')
            at = match.end()
        escaped.append(html.escape(text[at:]))
        return "<p>" + "".join(escaped).replace("\n", "<br>") + "</p>"

    paragraphs = "\n".join(paragraph(part) for part in re.split(r"\n\s*\n", body.strip()) if part.strip())
    parts = [
        "<!doctype html>",
        '<html><head><meta charset="utf-8"><title>' + html.escape(subject) + "</title></head>",
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.5;color:#222">',
        "<h1 style=\"font-size:20px\">" + html.escape(subject) + "</h1>",
        paragraphs,
    ]
    if cta:
        parts.append(f'<p><a href="{html.escape(cta)}" style="font-weight:bold">See the offer</a></p>')
    if unsubscribe:
        parts.append(
            '<p style="font-size:12px;color:#777">You receive this because you subscribed to our emails. '
            f'<a href="{html.escape(unsubscribe)}">Unsubscribe</a>.</p>'
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _string_data(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def tracking_secret(data_dir: Path) -> str:
    """The example program's tracking-link key when none is configured: derived from the data
    directory's own secret, so links stay valid across restarts and nobody else can sign one."""
    from loyalty_cdp.adapters.suppression import load_or_create_secret

    return hmac.new(load_or_create_secret(data_dir), b"email-tracking-links", hashlib.sha256).hexdigest()


def program_destinations(
    program_path: Path | None, data_dir: Path, environ: Mapping[str, str] | None = None
) -> list[DestinationConfig]:
    """The destinations of a program file (None: the example program, with its demo secrets
    when the variables are unset); a relative audience ``directory`` is under ``data_dir``."""
    from loyalty_cdp.programs import retail_program_path

    env = dict(os.environ if environ is None else environ)
    if program_path is None:
        for variable, value in EXAMPLE_SECRETS.items():
            env.setdefault(variable, value)
        if not env.get(TRACKING_SECRET_VARIABLE):
            env[TRACKING_SECRET_VARIABLE] = tracking_secret(data_dir)
    configs = load_destinations(program_path or retail_program_path(), env)
    resolved = []
    for config in configs:
        if isinstance(config.settings, AudienceSettings):
            config = dataclasses.replace(config, settings=config.settings.under(data_dir))
        resolved.append(config)
    return resolved


def _event_call(event: Event) -> dict[str, Any]:
    """A status event back as the Segment call it was made from (the fields a client sends)."""
    body = msgspec.json.decode(event.body)
    return {key: body[key] for key in STATUS_PROPERTIES if key in body}


class Activation:
    """The destinations of one server: outbound messages from decisions, the dispatcher, audiences.

    ``append(calls)`` stores Segment calls durably in the event log (thread-safe, synchronous).
    ``members`` (the processor's member view) is read for consent at send time and for the
    contact identifiers of audience exports; without it nothing is sent (consent unknown).
    """

    def __init__(
        self, settings: Settings, program_path: Path | None, append: Append, metrics: Metrics, *,
        members: MemberDirectory | None = None, environ: Mapping[str, str] | None = None,
        consent_policy: DefaultPolicy = STRICT_POLICY,
    ) -> None:
        from loyalty_cdp.programs import retail_program_path

        self.settings = settings
        self.example = program_path is None
        self.program_path = Path(program_path) if program_path is not None else retail_program_path()
        self.append = append
        self.metrics = metrics
        self.members = members
        self.consent_policy = consent_policy
        env = dict(os.environ if environ is None else environ)
        self.configs: list[DestinationConfig] = program_destinations(program_path, settings.data_dir, env)
        self.every_s = self._audience_interval(env)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(settings.data_dir / OUTBOX_FILE)
        try:
            with self.outbox.transaction() as conn:
                conn.execute(_SENT_SCHEMA)
                conn.execute("CREATE INDEX IF NOT EXISTS activation_sent_at ON activation_sent (sent_at)")
            self.decisions = DecisionStore(self.outbox)
            self.opt_outs = sms_opt_out_store(settings.data_dir)
            routes: list[tuple[Destination, DeliveryPolicy]] = []
            self.audiences: list[AudienceDestination] = []
            for config in self.configs:
                if config.type == "audience":
                    self.audiences.append(audience_destination(config))
                else:
                    routes.append((open_destination(config, settings.data_dir), config.delivery))
        except BaseException:
            self.outbox.close()
            raise
        self.by_channel: dict[str, list[DestinationConfig]] = {}
        for config in self.configs:
            self.by_channel.setdefault(config.channel, []).append(config)
        self.links: dict[str, TrackingLinks] = {}
        self.twilio_tokens: list[str] = []
        self.twilio_destinations: set[str] = set()
        for config in self.configs:
            if isinstance(config.settings, SmtpSettings) and config.settings.tracking_base_url:
                secret = config.secret("tracking_secret_env") or ""
                self.links[config.name] = TrackingLinks(config.settings.tracking_base_url, secret)
            if isinstance(config.settings, TwilioSettings):
                self.twilio_destinations.add(config.name)
                token = config.secret("auth_token_env")
                if token:
                    self.twilio_tokens.append(token)
        self.dispatcher = Dispatcher(
            self.outbox, routes, on_status=self._forward_status, consent_of=self.consent_of,
            on_latency=metrics.observe_send,
        )
        metrics.watch_destinations(lambda: self.stats)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._audience_task: asyncio.Task[None] | None = None
        self._started = False
        self._audience_lock = threading.Lock()

    @staticmethod
    def _audience_interval(env: Mapping[str, str]) -> float:
        raw = env.get(AUDIENCE_EVERY_VARIABLE)
        if raw is None:
            return DEFAULT_AUDIENCE_EVERY_S
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(AUDIENCE_EVERY_VARIABLE, f"must be a number of seconds, got {raw!r}") from None
        if value < 0 or value != value:
            raise InvalidInput(AUDIENCE_EVERY_VARIABLE, "must be 0 (never) or a positive number of seconds")
        return value

    @property
    def stats(self) -> dict[str, LaneStats]:
        """Each message destination's lane counters (empty before :meth:`start`)."""
        return self.dispatcher.stats

    def attach_members(self, members: MemberDirectory) -> None:
        """Read consent and contact identifiers from ``members`` (the processor's view)."""
        self.members = members

    # -- decisions -> messages (the processor thread) -------------------------------------------

    def messages_for(self, decision: Decision, profile: Profile) -> list[OutboundMessage]:
        """The messages a decision sends: one per destination of its channel, one per webhook.

        Only ``send`` decisions send. A member without an address for a destination gets no
        message there (counted in ``lcdp_activation_unaddressable_total``); a message that
        could not be sent as built (a content part missing) is counted and logged, never
        raised, so one decision can never stop the processor's batch.
        """
        if decision.action != "send" or not decision.chosen:
            return []
        chosen = decision.chosen[0]
        user_id = decision.user_id or profile.user_id
        if not user_id:
            self._skip("*", chosen.channel, "no user_id", decision)
            return []
        now = _now_ms()
        created = max(now, chosen.send_at or 0)
        messages: list[OutboundMessage] = []
        for config in self.by_channel.get(chosen.channel, ()):
            built = self._channel_message(config, decision, profile, user_id, created)
            if built is not None:
                messages.append(built)
        for config in self.by_channel.get(WEBHOOK, ()):
            messages.append(OutboundMessage(
                message_id=message_id_for(decision.decision_id, config.name), decision_id=decision.decision_id,
                user_id=user_id, destination=config.name, channel=WEBHOOK, recipient="", created_at=created,
                data=_string_data({
                    "decision_id": decision.decision_id, "member_id": decision.member_id, "user_id": user_id,
                    "trigger_id": decision.trigger_id, "campaign": decision.campaign, "arm": decision.arm,
                    "offer_id": chosen.offer_id, "offer_name": chosen.name, "channel": chosen.channel,
                    "send_at": chosen.send_at, "content": dict(chosen.content), "grant": chosen.grant,
                    "reason": chosen.reason, "decided_at": decision.at,
                }),
            ))
        valid = []
        for message in messages:
            try:
                valid.append(validate_message(message))
            except InvalidInput as exc:
                self._skip(message.destination, message.channel, f"invalid {exc.field}", decision, exc.reason)
                continue
            self.metrics.activation_messages.labels(message.destination).inc()
        return valid

    def _skip(self, destination: str, channel: str, reason: str, decision: Decision, detail: str = "") -> None:
        self.metrics.activation_unaddressable.labels(destination, reason).inc()
        log.info("decision %s: no %s message for %s (%s%s)", decision.decision_id, channel, destination, reason,
                 f": {detail}" if detail else "")

    def _channel_message(
        self, config: DestinationConfig, decision: Decision, profile: Profile, user_id: str, created: int
    ) -> OutboundMessage | None:
        chosen = decision.chosen[0]
        content = chosen.content
        common: dict[str, Any] = {
            "message_id": message_id_for(decision.decision_id, config.name), "decision_id": decision.decision_id,
            "user_id": user_id, "destination": config.name, "channel": config.channel, "created_at": created,
            "timezone": member_timezone(profile),
        }
        if config.channel == EMAIL:
            address = email_address(profile)
            if address is None:
                self._skip(config.name, EMAIL, "no email address", decision)
                return None
            subject, body = content.get("subject") or "", content.get("body") or content.get("text") or ""
            links = self.links.get(config.name)
            probe = OutboundMessage(recipient=address, **common)
            unsubscribe = links.url("unsubscribe", probe) if links is not None else None
            document = content.get("html") or email_html(subject, body, content.get("url"), unsubscribe)
            text = body + (f"\n\nUnsubscribe: {unsubscribe}\n" if unsubscribe else "\n")
            return OutboundMessage(recipient=address, subject=subject, html=document, text=text, **common)
        if config.channel == SMS:
            phone = phone_number(profile)
            if phone is None:
                self._skip(config.name, SMS, "no phone number", decision)
                return None
            return OutboundMessage(recipient=phone, body=content.get("body") or content.get("text"), **common)
        if config.channel == PUSH:
            token = push_token(profile)
            if token is None:
                self._skip(config.name, PUSH, "no push token", decision)
                return None
            data = _string_data({"offer_id": chosen.offer_id, "trigger_id": decision.trigger_id,
                                 "campaign": decision.campaign})
            return OutboundMessage(recipient=token, subject=content.get("title") or content.get("subject"),
                                   body=content.get("body"), data=data, **common)
        return None

    def notify(self) -> None:
        """Wake the lanes now (thread-safe): call after the transaction that staged messages commits."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self.dispatcher.notify, None)

    # -- consent ----------------------------------------------------------------------------------

    def consent_of(self, user_id: str) -> dict[str, bool]:
        """``{purpose: allowed}`` for the member ``user_id`` now (nothing allowed for an unknown member)."""
        members = self.members
        if members is None:
            raise StorageUnavailable("no member view is attached to activation: consent cannot be read")
        member_id = members.find(USER_ID, user_id)
        profile = None if member_id is None else members.profile(member_id)
        if profile is None:
            return {}
        return allowed_consents(profile.consent, self.consent_policy)

    # -- status events and callbacks --------------------------------------------------------------

    async def _forward_status(self, events: list[Event]) -> None:
        calls = [_event_call(event) for event in events]
        sent = [call for call in calls if call.get("event") == MESSAGE_SENT
                and call.get("properties", {}).get("destination") in self.twilio_destinations]
        if sent:
            await asyncio.to_thread(self.remember_sent, sent)
        await asyncio.to_thread(self.append, calls)
        for call in calls:
            self.metrics.activation_events.labels(call.get("event", "")).inc()

    def remember_sent(self, calls: Sequence[dict[str, Any]]) -> None:
        """Keep what a later delivery callback needs (ids and times only), for SMS destinations."""
        rows = []
        for call in calls:
            p = call["properties"]
            sent_at = _now_ms()
            rows.append((p["message_id"], p["decision_id"], p["destination"], p["channel"],
                         sent_at - int(p.get("latency_ms", 0)), int(p.get("attempts", 1)), sent_at))
        with self.outbox.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO activation_sent VALUES (?,?,?,?,?,?,?)", rows)
            conn.execute("DELETE FROM activation_sent WHERE sent_at < ?", (_now_ms() - SENT_KEPT_MS,))

    def sent_message(self, message_id: str) -> SentMessage | None:
        """A message the dispatcher sent through an SMS destination, for its delivery callback."""
        try:
            with self.outbox.transaction() as conn:
                row = conn.execute(
                    "SELECT message_id, decision_id, destination, channel, created_at, attempts FROM activation_sent "
                    "WHERE message_id = ?", (message_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"outbox: {exc}") from exc
        return None if row is None else SentMessage(*row)

    def delivery_call(self, message_id: str, status: str, at_ms: int, *, reason: str | None = None,
                      provider_id: str | None = None) -> dict[str, Any] | None:
        """The status event of a provider's delivery callback, or None for an unknown (or erased) message."""
        sent = self.sent_message(message_id)
        if sent is None:
            return None
        decision = self.decisions.get(sent.decision_id)
        if decision is None or not decision.user_id:
            return None  # the member was erased (or the decision is not ours)
        message = OutboundMessage(
            message_id=sent.message_id, decision_id=sent.decision_id, user_id=decision.user_id,
            destination=sent.destination, channel=sent.channel, recipient="", created_at=sent.created_at,
        )
        return status_call(message, status, at_ms, attempts=sent.attempts, reason=reason, provider_id=provider_id)

    # -- what the public endpoints record ---------------------------------------------------------

    def verify_link(self, action: str, params: Mapping[str, str]) -> TrackingHit:
        """The hit a tracking link describes, if one of the email destinations signed it."""
        if not self.links:
            raise InvalidInput("s", "no email destination of this server signs tracking links")
        problem: InvalidInput | None = None
        for links in self.links.values():
            try:
                return links.verify(action, params)
            except InvalidInput as exc:
                problem = exc
        assert problem is not None
        raise problem

    def tracking_calls(self, hit: TrackingHit, at_ms: int) -> list[dict[str, Any]]:
        """The events a verified hit appends: an open or a click; an unsubscribe with the consent withdrawal.

        Their messageIds derive from the message (and the link), so a repeated hit (an image
        proxy, a double click, a retried one-click POST) is stored once.
        """
        if hit.action == "click":
            digest = hashlib.blake2b((hit.url or "").encode(), digest_size=8).hexdigest()
            return [tracking_call(hit, at_ms, f"{hit.message_id}:clicked.{digest}")]
        if hit.action == "open":
            return [tracking_call(hit, at_ms, f"{hit.message_id}:opened")]
        withdrawal = consent_update_call(
            ConsentUpdate(EMAIL_MARKETING, False, "email_unsubscribe"), actor="member", at_ms=at_ms,
            message_id=f"{hit.message_id}:consent.{EMAIL_MARKETING}", user_id=hit.user_id,
        )
        withdrawal["context"] = {"channel": "email"}
        withdrawal["properties"].update({"message_id": hit.message_id, "decision_id": hit.decision_id})
        return [tracking_call(hit, at_ms, f"{hit.message_id}:unsubscribed"), withdrawal]

    def sms_keyword_calls(self, phone: str, keyword: str, at_ms: int, reference: str) -> list[dict[str, Any]]:
        """The SMS-consent change a STOP (withdrawn) or START (granted) from ``phone`` records for its member."""
        members = self.members
        if keyword not in ("stop", "start") or members is None:
            return []
        member_id = members.find(PHONE_KIND, phone)
        profile = None if member_id is None else members.profile(member_id)
        if profile is None or not profile.user_id:
            return []
        granted = keyword == "start"
        call = consent_update_call(
            ConsentUpdate(SMS_PURPOSE, granted, "sms_keyword"), actor="member", at_ms=at_ms,
            message_id=f"sms:{reference}:consent", user_id=profile.user_id,
        )
        call["context"] = {"channel": "sms"}
        return [call]

    async def record(self, calls: list[dict[str, Any]]) -> None:
        """Append ``calls`` to the event log (durably) without blocking the event loop."""
        if calls:
            await asyncio.to_thread(self.append, calls)
            for call in calls:
                self.metrics.activation_events.labels(call.get("event") or call.get("type", "")).inc()

    # -- audiences --------------------------------------------------------------------------------

    def _segment_ids(self) -> list[str]:
        from loyalty_cdp.adapters.program_yaml import load_program_source
        from loyalty_cdp.core.decisioning import DecisioningBook

        book = DecisioningBook.from_book(load_program_source(self.program_path).book)
        configured = [definition.id for definition in book.latest.segments.definitions]
        stored = sorted(set(self.decisions.segment_sizes()) - set(configured))
        return configured + stored

    def _audience_members(self, segment: str, members: MemberDirectory) -> Iterator[tuple[AudienceMember, bool]]:
        after: str | None = None
        while True:
            page = self.decisions.segment_members(segment, after, 1000)
            if not page:
                return
            for row in page:
                profile = members.profile(row.member_id)
                if profile is None:
                    continue
                shares = allowed_consents(profile.consent, self.consent_policy).get(SALE_SHARING) is True
                yield AudienceMember(row.member_id, tuple(profile.identities.get(EMAIL_KIND, ())),
                                     tuple(profile.identities.get(PHONE_KIND, ()))), shares
            after = page[-1].member_id

    def export_audiences(self, at_ms: int | None = None) -> dict[str, int]:
        """Export every segment to every audience destination now; returns rows written per file set."""
        members = self.members
        if members is None or not self.audiences:
            return {}
        at = _now_ms() if at_ms is None else at_ms
        written: dict[str, int] = {}
        failures: dict[str, str] = {}
        with self._audience_lock:  # an erasure's clean-up of the files waits, and is not undone
            for segment in self._segment_ids():
                rows = list(self._audience_members(segment, members))
                listed = [member for member, _ in rows]
                opted_out = {member.user_id for member, shares in rows if not shares}
                for audience in self.audiences:
                    if audience.name in failures:
                        continue
                    try:
                        export = audience.export(segment, listed, opted_out, at)
                    except LoyaltyCdpError as exc:  # this target is down: the others still get their files
                        failures[audience.name] = str(exc)
                        continue
                    written[f"{audience.name}/{segment}"] = export.rows
                    self.metrics.audience_rows.labels(audience.name, segment).set(export.rows)
        for name, failure in failures.items():
            log.error("audience export to %s failed (its previous files stay): %s", name, failure)
        return written

    async def _export_periodically(self) -> None:
        delay = min(FIRST_AUDIENCE_EXPORT_S, self.every_s)
        while True:
            await asyncio.sleep(delay)
            delay = self.every_s
            try:
                written = await asyncio.to_thread(self.export_audiences)
            except (LoyaltyCdpError, OSError, sqlite3.Error):
                log.exception("audience export failed; trying again in %.0f s", self.every_s)
                continue
            if written:
                log.info("audiences exported: %s", ", ".join(f"{k}={v}" for k, v in sorted(written.items())))

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the dispatcher's lanes, the status forwarding and the periodic audience export."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        if self.members is None:
            log.error("activation has no member view: messages wait in the outbox until consent can be read")
        await self.dispatcher.start()
        if self.audiences and self.every_s > 0:
            self._audience_task = self._loop.create_task(self._export_periodically(), name="audience-export")
        self._started = True

    async def close(self) -> None:
        """Stop the lanes (messages in flight finish or go back to the outbox), then close the stores."""
        if self._audience_task is not None:
            self._audience_task.cancel()
            await asyncio.gather(self._audience_task, return_exceptions=True)
            self._audience_task = None
        await self.dispatcher.close()  # also closes every destination's connections
        self._started = False
        self._loop = None
        self.decisions.close()
        self.opt_outs.close()
        self.outbox.close()

    # -- data-subject requests (services/privacy.py): what is held about a person, and its erasure -------

    def _person_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A read of the outbox file on a connection of its own (the outbox's two are for its writes)."""
        try:
            db = sqlite3.connect(self.outbox.path, timeout=BUSY_TIMEOUT_S)
            try:
                return db.execute(sql, params).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"outbox {self.outbox.path}: {exc}") from exc

    def person_member_ids(self, user_ids: set[str]) -> set[str]:
        """Every member id the decision store filed decisions about these user ids under."""
        if not user_ids:
            return set()
        rows = self._person_rows("SELECT DISTINCT member_id FROM decisions WHERE user_id IN "
                                 "(SELECT value FROM json_each(?))", (msgspec.json.encode(sorted(user_ids)).decode(),))
        return {row[0] for row in rows}

    def person_decisions(self, member_ids: set[str]) -> list[Decision]:
        """Every stored decision about the members, newest first."""
        found: list[Decision] = []
        for member_id in sorted(set(member_ids)):
            before: tuple[int, str] | None = None
            while page := self.decisions.member_decisions(member_id, before, 500):
                found += page
                before = (page[-1].at, page[-1].decision_id)
        return sorted(found, key=lambda d: (d.at, d.decision_id), reverse=True)

    def person_messages(self, decision_ids: set[str]) -> list[dict[str, Any]]:
        """The messages the decisions sent or will send: destination, channel, status and times (epoch ms).

        Queued and dead-lettered messages are stored whole (recipient, subject, text); a sent
        one keeps only its outcome, with the send time that SMS delivery callbacks need."""
        from loyalty_cdp.core.messages import decode_message

        channels = {config.name: config.channel for config in self.configs}
        tables = ("outbox_messages", "outbox_dead_letters", "outbox_finished")
        destinations = set(channels) | {row[0] for table in tables
                                        for row in self._person_rows(f"SELECT DISTINCT destination FROM {table}", ())}
        owner = {message_id_for(d, name): d for d in decision_ids for name in destinations}
        if not owner:
            return []
        ids = (msgspec.json.encode(sorted(owner)).decode(),)
        where = "WHERE message_id IN (SELECT value FROM json_each(?))"
        records: dict[str, dict[str, Any]] = {}

        def held(body: bytes) -> dict[str, Any]:
            message = decode_message(body)
            return _string_data({"channel": message.channel, "recipient": message.recipient,
                                 "subject": message.subject, "text": message.text, "body": message.body,
                                 "created_at": message.created_at})

        for message_id, destination, body, enqueued, due, attempts, error in self._person_rows(
                f"SELECT message_id, destination, body, enqueued_at, next_attempt_at, attempts, last_error "
                f"FROM outbox_messages {where}", ids):
            records[message_id] = {"status": "queued", "destination": destination, **held(body),
                                   "enqueued_at": enqueued, "next_attempt_at": due, "attempts": attempts,
                                   **({"last_error": error} if error else {})}
        for message_id, destination, body, reason, attempts, failed_at in self._person_rows(
                f"SELECT message_id, destination, body, reason, attempts, failed_at FROM outbox_dead_letters {where}",
                ids):
            records[message_id] = {"status": "dead_letter", "destination": destination, **held(body),
                                   "reason": reason, "attempts": attempts, "failed_at": failed_at}
        for message_id, destination, outcome, finished_at, provider_id, reason in self._person_rows(
                f"SELECT message_id, destination, outcome, finished_at, provider_id, reason FROM outbox_finished "
                f"{where}", ids):
            records[message_id] = _string_data({"status": outcome, "destination": destination,
                                                "channel": channels.get(destination), "finished_at": finished_at,
                                                "provider_id": provider_id, "reason": reason})
        for message_id, channel, created_at, attempts, sent_at in self._person_rows(
                f"SELECT message_id, channel, created_at, attempts, sent_at FROM activation_sent {where}", ids):
            record = records.setdefault(message_id, {"status": "sent"})
            record.update(channel=channel, created_at=created_at, attempts=attempts, sent_at=sent_at)
        return [{"message_id": message_id, "decision_id": owner[message_id], **record}
                for message_id, record in sorted(records.items(), key=lambda item: (owner[item[0]], item[0]))]

    def person_segments(self, member_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
        """The members' segment memberships now (with since when) and every entry and exit, oldest first."""
        ids = (msgspec.json.encode(sorted(member_ids)).decode(),)
        current = [{"segment_id": segment, "member_id": member, "since": since}
                   for segment, member, since in self._person_rows(
                       "SELECT segment_id, member_id, since FROM segment_members WHERE member_id IN "
                       "(SELECT value FROM json_each(?)) ORDER BY segment_id, member_id", ids)]
        history = [msgspec.structs.asdict(t) for member in sorted(member_ids)
                   for t in self.decisions.segment_transitions(member_id=member)]
        history.sort(key=lambda t: (t["at"], t["segment_id"], t["entry"], t["kind"]))
        return {"current": current, "history": history}

    def person_audiences(self, segments: set[str], emails: set[str],
                         phones: set[str]) -> list[dict[str, Any]]:
        """Which audience files list the person now: rows of their hashed identifiers in each segment's last export."""
        found = []
        for audience in self.audiences:
            hashes = AudienceDestination.person_hashes(emails, phones, audience.default_region)
            for segment in sorted(set(segments)):
                rows, exported_at = audience.holds(segment, hashes)
                if rows:
                    found.append({"destination": audience.name, "segment": segment, "rows": rows,
                                  "exported_at": exported_at})
        return found

    def erase_person(self, member_ids: set[str], user_ids: set[str],
                     phones: set[str]) -> dict[str, int]:
        """Delete what activation and the decision store hold about a person; counts of rows deleted.

        Decisions (of ``member_ids`` and of any member id filed under ``user_ids``), their
        outcomes, memberships, transitions and messages (``DecisionStore.erase_member``), the
        sent-message rows of their decisions, the status events about them not yet handed to
        the log, and the SMS STOP entries of ``phones``. Deletes run with ``secure_delete`` (it
        stays on for the outbox's durable connection: every later delete there is zeroed too);
        the caller then checkpoints the files and scrubs what earlier deletes left in free pages.
        """
        users = set(user_ids)
        ids = set(member_ids) | self.person_member_ids(users)
        with self.outbox.transaction() as conn:
            conn.execute("PRAGMA secure_delete = ON")
            decision_ids = [row[0] for row in conn.execute(
                "SELECT decision_id FROM decisions WHERE member_id IN (SELECT value FROM json_each(?))",
                (msgspec.json.encode(sorted(ids)).decode(),))]
            sent = conn.executemany("DELETE FROM activation_sent WHERE decision_id = ?",
                                    [(d,) for d in decision_ids]).rowcount
            about = [(seq,) for seq, blob in conn.execute("SELECT seq, event FROM outbox_status_events")
                     if msgspec.msgpack.decode(blob, type=Event).user_id in users]
            status = conn.executemany("DELETE FROM outbox_status_events WHERE seq = ?", about).rowcount
        rows = sum(self.decisions.erase_member(member_id) for member_id in sorted(ids))
        return {"decisions": len(decision_ids), "decision_store_rows": rows, "sent_rows": sent,
                "status_events": status, "sms_opt_outs": self._erase_sms_opt_outs(phones)}

    def _erase_sms_opt_outs(self, phones: set[str]) -> int:
        from loyalty_cdp.adapters.destinations.factory import SMS_OPT_OUTS_FILE

        path = self.settings.data_dir / SMS_OPT_OUTS_FILE
        if not phones or not path.exists():
            return 0
        try:
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            try:
                db.execute("PRAGMA secure_delete = ON")
                return db.executemany("DELETE FROM sms_opt_outs WHERE phone = ?",
                                      [(phone,) for phone in sorted(phones)]).rowcount
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"SMS opt-out store {path}: {exc}") from exc

    def erase_from_audiences(self, segments: set[str], emails: set[str], phones: set[str],
                             at_ms: int | None = None) -> int:
        """Delete the person's hashed rows from every export file of ``segments``; returns rows removed."""
        at = _now_ms() if at_ms is None else at_ms
        with self._audience_lock:
            return sum(audience.erase(segments, AudienceDestination.person_hashes(emails, phones,
                                                                                  audience.default_region), at)
                       for audience in self.audiences)

    @property
    def erasure_destinations(self) -> list[str]:
        """The destinations that take deletion requests: every webhook (a signed ``member.erased`` event)."""
        return [config.name for config in self.configs if config.type == "webhook"]

    async def notify_erasure(self, request_id: str, user_ids: set[str], now_ms: int | None = None,
                             attempts: int = 2) -> dict[str, str]:
        """Pass the deletion on to every webhook destination at once; ``{name: "delivered" | "failed: <why>"}``.

        Each gets ``attempts`` tries (transient failures only) within its configured timeout.
        The event's id is the same for every attempt and every re-run of one request, so a
        receiver that keeps ids drops repeats."""
        from loyalty_cdp.adapters.destinations.base import PermanentFailure, TransientFailure
        from loyalty_cdp.adapters.destinations.webhook import WebhookDestination

        async def notify(config: DestinationConfig) -> tuple[str, str]:
            destination = open_destination(config, self.settings.data_dir)
            assert isinstance(destination, WebhookDestination)
            digest = hashlib.blake2b(f"{request_id}|{config.name}".encode(), digest_size=12).hexdigest()
            outcome = "failed: not attempted"
            try:
                for attempt in range(attempts):
                    try:
                        await destination.send_erasure(f"erasure_{digest}", request_id, sorted(user_ids),
                                                       _now_ms() if now_ms is None else now_ms)
                        return config.name, "delivered"
                    except TransientFailure as exc:
                        outcome = f"failed: {exc}"
                        if attempt + 1 < attempts:
                            await asyncio.sleep(min(exc.retry_after or 0.1 * 2 ** attempt, 1.0))
                    except PermanentFailure as exc:
                        return config.name, f"failed: {exc}"
                return config.name, outcome
            finally:
                await destination.aclose()

        if not user_ids:
            return {}
        done = await asyncio.gather(*(notify(config) for config in self.configs if config.type == "webhook"))
        return dict(done)
