"""SMS through Twilio's Messages API (or any service with its request shape), with STOP handling and quiet hours.

Wire format, as Twilio documents it: ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``
with HTTP Basic auth (Account SID and auth token, or an API key SID and its secret), a
form-encoded body of ``To``, ``From`` (or ``MessagingServiceSid``), ``Body`` and optionally
``StatusCallback``; ``201`` answers JSON whose ``sid`` names the message. Errors answer JSON
with a numeric ``code``: 21610 (the recipient replied STOP to Twilio) opts the number out
here too; 21211, 21612 and 21614 (not a reachable mobile number) are bounces.

Before a send: the recipient must be a valid E.164 number; a number that texted STOP is
suppressed (see :class:`SmsOptOutStore`, fed by the inbound-SMS webhook through
:meth:`SmsOptOutStore.record_inbound`); during quiet hours in the recipient's time zone (the
message's ``timezone``, else the number's only zone, else the configured default) the
message is deferred to the end of the quiet period. Twilio's Messages API takes no
idempotency key: the key travels as an ``Idempotency-Key`` header (for gateways that honour
it) and in the status callback URL, so a crash between Twilio's acceptance and our record
can, rarely, repeat an SMS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
import threading
from collections.abc import Mapping
from datetime import datetime, time, timedelta
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import msgspec
import phonenumbers
from phonenumbers import timezone as phone_timezones

from loyalty_cdp.adapters.destinations.base import (
    USER_AGENT,
    Deferred,
    PermanentFailure,
    Receipt,
    Suppressed,
    http_failure,
    json_object,
    post,
)
from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT, switch_to_wal
from loyalty_cdp.core.messages import MESSAGE_BOUNCED, MESSAGE_DELIVERED, MESSAGE_FAILED, SMS, OutboundMessage, is_e164
from loyalty_cdp.errors import InvalidInput, StorageUnavailable

API_BASE_URL = "https://api.twilio.com"
# Twilio's default opt-out, opt-in and help keywords (a message that is exactly the word).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
OPTED_OUT_CODE = 21610
UNREACHABLE_CODES = frozenset({21211, 21612, 21614})
UNDELIVERABLE_CODES = frozenset({30003, 30005, 30006})  # unreachable, unknown or landline handset


class QuietHours(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """No SMS from ``start`` to ``end`` (local ``HH:MM``; may wrap midnight) in the recipient's zone.

    YAML 1.1 reads an unquoted ``21:00`` as the base-60 integer 1260; such integers are read
    back as the time they were written as. (Errors are ValueErrors so that msgspec reports
    them with their path in the configuration.)
    """

    start: str | int = "21:00"
    end: str | int = "08:00"
    default_timezone: str = "UTC"

    def __post_init__(self) -> None:
        for field in ("start", "end"):
            try:
                clock_time(getattr(self, field), field)
            except InvalidInput as exc:
                raise ValueError(f"{field} {exc.reason}") from None
        try:
            ZoneInfo(self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"default_timezone {self.default_timezone!r} is not an IANA time zone") from None

    @property
    def period(self) -> tuple[time, time]:
        return clock_time(self.start, "start"), clock_time(self.end, "end")


class TwilioSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``settings:`` of a ``twilio`` destination."""

    account_sid: str
    auth_token_env: str
    api_key_sid: str | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    base_url: str = API_BASE_URL
    status_callback_url: str | None = None
    quiet_hours: QuietHours | None = None


def clock_time(value: str | int, field: str) -> time:
    """``"21:00"`` (or YAML's base-60 reading of it, 1260) as a time of day."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(field, f"must be a time such as 21:00, got {value!r}") from None


def inbound_keyword(body: str) -> str | None:
    """``stop``, ``start`` or ``help`` when an inbound SMS is exactly one of Twilio's keywords."""
    word = body.strip().rstrip(".!").strip().upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def recipient_zone(message: OutboundMessage, default: str) -> ZoneInfo:
    """The zone quiet hours use: the message's, else the number's only zone, else ``default``."""
    if message.timezone:
        try:
            return ZoneInfo(message.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        zones = phone_timezones.time_zones_for_number(phonenumbers.parse(message.recipient, None))
    except phonenumbers.NumberParseException:
        zones = ()
    if len(zones) == 1 and zones[0] != "Etc/Unknown":
        return ZoneInfo(zones[0])
    return ZoneInfo(default)


def quiet_hours_end(now_ms: int, zone: ZoneInfo, start: time, end: time) -> int | None:
    """When the quiet period containing ``now_ms`` ends (epoch ms), or None outside quiet hours."""
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    moment = local.time().replace(tzinfo=None)
    if start == end:
        return None
    if start < end:
        quiet, end_day = start <= moment < end, local.date()
    else:  # wraps midnight: quiet from start until end of the next morning
        quiet = moment >= start or moment < end
        end_day = local.date() if moment < end else local.date() + timedelta(days=1)
    if not quiet:
        return None
    return int(datetime.combine(end_day, end, tzinfo=zone).timestamp() * 1000)


def request_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's ``X-Twilio-Signature`` of a webhook request: base64 HMAC-SHA1 of the URL and sorted params."""
    text = url + "".join(key + params[key] for key in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()).decode()


def verify_request(auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    """Whether an inbound webhook (incoming SMS, status callback) really comes from Twilio."""
    expected = request_signature(auth_token, url, params).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


def callback_status(params: Mapping[str, str]) -> str | None:
    """The status event a Twilio status callback reports (``MessageStatus``, ``ErrorCode``), or None."""
    status = params.get("MessageStatus", "")
    if status == "delivered":
        return MESSAGE_DELIVERED
    if status == "undelivered":
        code = params.get("ErrorCode", "")
        return MESSAGE_BOUNCED if code.isdigit() and int(code) in UNDELIVERABLE_CODES else MESSAGE_FAILED
    if status == "failed":
        return MESSAGE_FAILED
    return None


class SmsOptOutStore:
    """Numbers that texted STOP (and not START since), in SQLite; kept apart from erasable data on purpose."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute(BUSY_TIMEOUT)
            switch_to_wal(self._db)
            self._db.execute("PRAGMA secure_delete = ON")  # an erased number leaves no bytes behind
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sms_opt_outs (phone TEXT PRIMARY KEY, opted_out_at INTEGER NOT NULL, "
                "keyword TEXT NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailable(f"cannot open SMS opt-out store {path}: {exc}") from exc

    def record_inbound(self, from_number: str, body: str, at_ms: int) -> str | None:
        """Apply an inbound SMS: STOP opts the number out, START opts it back in; returns the keyword."""
        keyword = inbound_keyword(body)
        if keyword == "stop":
            self.opt_out(from_number, at_ms, body.strip().upper()[:16])
        elif keyword == "start":
            self.opt_in(from_number)
        return keyword

    def opt_out(self, phone: str, at_ms: int, keyword: str = "STOP") -> None:
        if not is_e164(phone):
            raise InvalidInput("From", f"{phone!r} is not an E.164 phone number")
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO sms_opt_outs VALUES (?, ?, ?)", (phone, at_ms, keyword))

    def opt_in(self, phone: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sms_opt_outs WHERE phone = ?", (phone,))

    def is_opted_out(self, phone: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM sms_opt_outs WHERE phone = ?", (phone,)).fetchone() is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()


class TwilioDestination:
    """Sends SMS through a Twilio-compatible Messages API."""

    channel = SMS

    def __init__(
        self, name: str, *, account_sid: str, auth_token: str, opt_outs: SmsOptOutStore, api_key_sid: str | None = None,
        from_number: str | None = None, messaging_service_sid: str | None = None, base_url: str = API_BASE_URL,
        status_callback_url: str | None = None, quiet_hours: QuietHours | None = None,
        consent_purpose: str | None = "sms", timeout_s: float = 10.0,
    ) -> None:
        if (from_number is None) == (messaging_service_sid is None):
            raise InvalidInput("from_number", "set exactly one of from_number and messaging_service_sid")
        if from_number is not None and not is_e164(from_number):
            raise InvalidInput("from_number", f"{from_number!r} is not an E.164 phone number")
        if not account_sid or not auth_token:
            raise InvalidInput("account_sid", "the Account SID and the auth token (or API key secret) are required")
        self.name = name
        self.consent_purpose = consent_purpose
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._auth = (api_key_sid or account_sid, auth_token)
        self._sender = {"From": from_number} if from_number else {"MessagingServiceSid": messaging_service_sid or ""}
        self._status_callback = status_callback_url
        self._quiet = quiet_hours
        self._opt_outs = opt_outs
        self._client = httpx.AsyncClient(timeout=timeout_s, headers={"User-Agent": USER_AGENT})

    def form(self, message: OutboundMessage) -> dict[str, str]:
        """The form fields of the request that sends ``message``."""
        fields = {"To": message.recipient, **self._sender, "Body": message.body or ""}
        if self._status_callback:
            separator = "&" if "?" in self._status_callback else "?"
            query = urlencode({"message_id": message.message_id})
            fields["StatusCallback"] = f"{self._status_callback}{separator}{query}"
        return fields

    async def send(self, message: OutboundMessage, now_ms: int) -> Receipt:
        if not is_e164(message.recipient):
            raise PermanentFailure(f"{message.recipient!r} is not a valid E.164 phone number", bounced=True)
        if self._opt_outs.is_opted_out(message.recipient):
            raise Suppressed("the recipient texted STOP")
        if self._quiet is not None:
            zone = recipient_zone(message, self._quiet.default_timezone)
            until = quiet_hours_end(now_ms, zone, *self._quiet.period)
            if until is not None:
                raise Deferred(f"quiet hours in {zone.key}", until)
        response = await post(
            self._client, self._url, data=self.form(message), auth=self._auth,
            headers={"Idempotency-Key": message.message_id, "Accept": "application/json"},
        )
        detail = json_object(response)
        if response.status_code in (200, 201):
            sid = detail.get("sid")
            return Receipt(provider_id=sid if isinstance(sid, str) else None)
        code = detail.get("code")
        text = f"Twilio {code}: {detail.get('message', '')}"[:300]
        if code == OPTED_OUT_CODE:
            self._opt_outs.opt_out(message.recipient, now_ms, f"twilio:{OPTED_OUT_CODE}")
            raise Suppressed(text)
        if code in UNREACHABLE_CODES:
            raise PermanentFailure(text, bounced=True)
        raise http_failure(response, text if code is not None else "")

    async def aclose(self) -> None:
        await self._client.aclose()
