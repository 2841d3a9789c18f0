"""The contact policy: whether, and when, a member may be sent an offer on a channel.

Outbound channels (email, SMS, push...) are subject to, in this order: channel consent
(the channel's purpose, ``email_marketing`` for email, must be allowed: see
:mod:`loyalty_cdp.core.consent`), quiet hours in the member's time zone (a send that would
land in them is deferred to their end), per-channel frequency caps, the global weekly cap
across outbound channels, and the offer's cool-down. Inbound channels (web, app, POS: the
member is present and asking) are subject only to the consent purpose configured for
them, if any.

A cap of ``count`` per ``days`` means that no window of ``days`` ever holds more than
``count`` sends, sends already scheduled in the future included: it is checked on the
trailing window of the new send and of every later send it would fall under, so the rule
holds whatever order decisions are taken in.
"""

from __future__ import annotations

import re
from bisect import bisect_right, insort
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from loyalty_cdp.core.consent import PURPOSES, purpose_for_channel
from loyalty_cdp.errors import InvalidInput

DAY_MS = 86_400_000
WEEK_DAYS = 7
_HH_MM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
QUIET_STEP_MS = 15 * 60_000


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of the decisioning configuration objects: immutable, unknown keys rejected."""


class Cap(_Config, frozen=True, kw_only=True):
    count: int
    days: float


class QuietHours(_Config, frozen=True, kw_only=True):
    start: str
    end: str

    def minutes(self) -> tuple[int, int]:
        return _minutes(self.start), _minutes(self.end)


class ChannelPolicy(_Config, frozen=True, kw_only=True):
    inbound: bool = False
    consent: str | None = None
    caps: tuple[Cap, ...] = ()
    quiet_hours: QuietHours | None = None


DEFAULT_CHANNELS: dict[str, ChannelPolicy] = {
    "email": ChannelPolicy(caps=(Cap(count=3, days=7),)),
    "sms": ChannelPolicy(caps=(Cap(count=1, days=7),), quiet_hours=QuietHours(start="21:00", end="09:00")),
    "push": ChannelPolicy(caps=(Cap(count=1, days=1),), quiet_hours=QuietHours(start="21:00", end="08:00")),
    "web": ChannelPolicy(inbound=True),
    "app": ChannelPolicy(inbound=True),
    "pos": ChannelPolicy(inbound=True),
}


class ContactPolicy(_Config, frozen=True, kw_only=True):
    timezone: str = "UTC"
    weekly_cap: int | None = None
    channels: dict[str, ChannelPolicy] = msgspec.field(default_factory=lambda: dict(DEFAULT_CHANNELS))

    def purpose(self, channel: str) -> str | None:
        """The consent purpose a channel needs: by default the privacy part's purpose of an
        outbound channel (``email`` -> ``email_marketing``), none for an inbound one."""
        policy = self.channels[channel]
        if policy.consent is not None or policy.inbound:
            return policy.consent
        return purpose_for_channel(channel)


class Send(msgspec.Struct, frozen=True, array_like=True):
    """One message sent (or scheduled) to the member: when, on which channel, which offer."""

    at: int
    channel: str
    offer_id: str


class Verdict(msgspec.Struct, frozen=True):
    """Whether the send may happen, when (``send_at``, after quiet hours), and why not or why later."""

    allowed: bool
    send_at: int | None
    reasons: tuple[str, ...]


def _minutes(text: str) -> int:
    found = _HH_MM.match(text)
    if not found:
        raise InvalidInput("quiet_hours", f"{text!r} is not a time of day HH:MM")
    return int(found.group(1)) * 60 + int(found.group(2))


def check_policy(policy: ContactPolicy, field: str) -> None:
    """Semantic checks of a contact policy (``field`` names it in errors)."""
    zone(policy.timezone, f"{field}.timezone")
    if policy.weekly_cap is not None and policy.weekly_cap < 0:
        raise InvalidInput(f"{field}.weekly_cap", "must not be negative")
    if not policy.channels:
        raise InvalidInput(f"{field}.channels", "name at least one channel")
    for name, channel in policy.channels.items():
        where = f"{field}.channels.{name}"
        if channel.consent is not None and channel.consent not in PURPOSES:
            raise InvalidInput(f"{where}.consent", f"unknown purpose; one of {', '.join(PURPOSES)}")
        if not channel.inbound and policy.purpose(name) is None:
            raise InvalidInput(f"{where}.consent", "an outbound channel needs the consent purpose it sends under")
        for index, cap in enumerate(channel.caps):
            if cap.count < 0 or not 0 < cap.days <= 366:
                raise InvalidInput(f"{where}.caps[{index}]", "count must be >= 0 and days in (0, 366]")
        if channel.quiet_hours is not None:
            try:
                start, end = channel.quiet_hours.minutes()
            except InvalidInput as exc:
                raise InvalidInput(f"{where}.quiet_hours", exc.reason) from None
            if start == end:
                raise InvalidInput(f"{where}.quiet_hours", "start and end must differ")
        if channel.inbound and (channel.caps or channel.quiet_hours):
            raise InvalidInput(where, "an inbound channel (the member is present) takes no caps or quiet hours")


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Paris``)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(field, f"unknown time zone {name!r}; use an IANA name such as Europe/Paris") from None


def _inside(minute: int, start: int, end: int) -> bool:
    return start <= minute < end if start < end else minute >= start or minute < end


def in_quiet_hours(at: int, quiet: QuietHours, where: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(at / 1000, UTC).astimezone(where)
    start, end = quiet.minutes()
    return _inside(local.hour * 60 + local.minute, start, end)


def after_quiet_hours(at: int, quiet: QuietHours, where: ZoneInfo) -> int:
    """``at`` if it is outside the quiet hours, else the first instant after they end."""
    if not in_quiet_hours(at, quiet, where):
        return at
    local = datetime.fromtimestamp(at / 1000, UTC).astimezone(where)
    start, end = quiet.minutes()
    minute = local.hour * 60 + local.minute
    end_day = local.date() + timedelta(days=1) if start > end and minute >= start else local.date()
    wake = datetime.combine(end_day, clock_time(end // 60, end % 60), tzinfo=where)
    result = max(int(wake.timestamp() * 1000), at)
    while in_quiet_hours(result, quiet, where):  # a daylight-saving jump can hide the local end time
        result += QUIET_STEP_MS
    return result


def _cap_allows(times: list[int], send_at: int, count: int, window_ms: int) -> bool:
    """Whether adding ``send_at`` to ``times`` (sorted) keeps every window within ``count``."""
    merged = list(times)
    insort(merged, send_at)
    start = bisect_right(merged, send_at - 1)
    for index in range(start, len(merged)):
        at = merged[index]
        if at >= send_at + window_ms:
            break
        if bisect_right(merged, at) - bisect_right(merged, at - window_ms) > count:
            return False
    return True


def check_contact(policy: ContactPolicy, channel: str, offer_id: str, cool_down_days: float,
                  history: Sequence[Send], at: int, allowed: Mapping[str, bool], timezone: str | None) -> Verdict:
    """May ``offer_id`` go to the member on ``channel`` at ``at``, given what they were sent?

    ``allowed`` says which consent purposes are allowed for the member
    (:attr:`MemberFacts.allowed`), ``timezone`` is the member's IANA zone (the policy's
    default when None or unknown)."""
    rules = policy.channels.get(channel)
    if rules is None:
        return Verdict(False, None, (f"{channel} is not a configured channel",))
    purpose = policy.purpose(channel)
    if purpose is not None and allowed.get(purpose) is not True:
        return Verdict(False, None, (f"no consent for {purpose}",))
    if rules.inbound:
        return Verdict(True, at, ())
    notes: list[str] = []
    send_at = at
    if rules.quiet_hours is not None:
        where = _member_zone(timezone, policy.timezone)
        send_at = after_quiet_hours(at, rules.quiet_hours, where)
        if send_at != at:
            notes.append(f"deferred past quiet hours {rules.quiet_hours.start}-{rules.quiet_hours.end} ({where.key})")
    same_channel = sorted(send.at for send in history if send.channel == channel)
    for cap in rules.caps:
        if not _cap_allows(same_channel, send_at, cap.count, round(cap.days * DAY_MS)):
            return Verdict(False, None, (f"{channel} cap of {cap.count} per {cap.days:g} days reached",))
    if policy.weekly_cap is not None:
        outbound = sorted(send.at for send in history
                          if send.channel in policy.channels and not policy.channels[send.channel].inbound)
        if not _cap_allows(outbound, send_at, policy.weekly_cap, WEEK_DAYS * DAY_MS):
            return Verdict(False, None, (f"weekly cap of {policy.weekly_cap} messages reached",))
    if cool_down_days > 0:
        gap = round(cool_down_days * DAY_MS)
        if any(send.offer_id == offer_id and abs(send.at - send_at) < gap for send in history):
            return Verdict(False, None, (f"offer {offer_id} is cooling down ({cool_down_days:g} days)",))
    return Verdict(True, send_at, tuple(notes))


def _member_zone(timezone: str | None, default: str) -> ZoneInfo:
    if isinstance(timezone, str):
        try:
            return ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(default)
