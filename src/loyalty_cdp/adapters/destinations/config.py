"""The ``destinations:`` section of the program configuration: parsed, checked, secrets read from the environment.

Each entry names a destination, its ``type`` (``smtp``, ``twilio``, ``fcm``, ``webhook``,
``audience``), its type's ``settings``, optionally ``delivery`` (the dispatcher's
:class:`~loyalty_cdp.adapters.destinations.base.DeliveryPolicy` for it) and ``consent`` (the
purpose a recipient must have granted; ``none`` for transactional messages; by default the
channel's marketing purpose). Secrets are never written in the file: a setting ending in
``_env`` names the environment variable that holds the secret, and a literal ``password``,
``auth_token``, ``secret``, ``access_token``, ``private_key`` or ``secret_access_key`` is
refused (and so is a password inside an audience ``target`` URL). Every error names the field,
such as ``destinations[1].settings.port``. The keys are documented in ``docs/destinations.md``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from loyalty_cdp.adapters.destinations.audience import AudienceSettings, check_target
from loyalty_cdp.adapters.destinations.base import DeliveryPolicy
from loyalty_cdp.adapters.destinations.fcm import FcmSettings
from loyalty_cdp.adapters.destinations.smtp import SmtpSettings, smtp_address
from loyalty_cdp.adapters.destinations.twilio import TwilioSettings
from loyalty_cdp.adapters.destinations.webhook import WebhookSettings
from loyalty_cdp.core.messages import DEFAULT_CONSENT_PURPOSES, EMAIL, PUSH, SMS, WEBHOOK
from loyalty_cdp.errors import ConfigError, InvalidInput, NotFound

SETTINGS_TYPES: Mapping[str, type[msgspec.Struct]] = {
    "smtp": SmtpSettings,
    "twilio": TwilioSettings,
    "fcm": FcmSettings,
    "webhook": WebhookSettings,
    "audience": AudienceSettings,
}
CHANNELS: Mapping[str, str] = {"smtp": EMAIL, "twilio": SMS, "fcm": PUSH, "webhook": WEBHOOK, "audience": "audience"}
LITERAL_SECRETS = frozenset({
    "password", "auth_token", "secret", "access_token", "api_key_secret", "tracking_secret",
    # audience targets (SFTP keys, S3 credentials)
    "private_key", "private_key_passphrase", "secret_access_key", "session_token",
})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


class Secret:
    """A secret read from the environment; never shown by ``repr`` or ``str``."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class DestinationConfig:
    """One checked destination: ``settings`` is its type's settings struct, ``secrets`` by ``*_env`` field name."""

    name: str
    type: str
    settings: Any
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    consent_purpose: str | None = None
    secrets: Mapping[str, Secret] = field(default_factory=dict)

    @property
    def channel(self) -> str:
        return CHANNELS[self.type]

    def secret(self, env_field: str) -> str | None:
        held = self.secrets.get(env_field)
        return None if held is None else held.value


def _convert(data: Any, kind: type[msgspec.Struct], where: str) -> Any:
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        reason, path = (match.group("reason"), match.group("path") or "") if match else (str(exc), "")
        raise ConfigError(f"{where}{path}", reason) from None
    except InvalidInput as exc:  # a struct's own check
        raise ConfigError(f"{where}.{exc.field}" if exc.field else where, exc.reason) from None


def _secrets(settings: msgspec.Struct, where: str, environ: Mapping[str, str]) -> dict[str, Secret]:
    found: dict[str, Secret] = {}
    for name in settings.__struct_fields__:
        variable = getattr(settings, name)
        if not name.endswith("_env") or variable is None:
            continue
        value = environ.get(variable)
        if not value:
            raise ConfigError(f"{where}.{name}", f"the environment variable {variable} is not set")
        found[name] = Secret(value)
    return found


def _entry(raw: Any, where: str, environ: Mapping[str, str]) -> DestinationConfig:
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a mapping with name, type and settings")
    unknown = sorted(set(raw) - {"name", "type", "settings", "delivery", "consent"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown key (expected name, type, settings, delivery, consent)")
    name, kind = raw.get("name"), raw.get("type")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
    if not isinstance(kind, str) or kind not in SETTINGS_TYPES:
        raise ConfigError(f"{where}.type", f"must be one of {', '.join(SETTINGS_TYPES)}, got {kind!r}")
    raw_settings = raw.get("settings") or {}
    if not isinstance(raw_settings, dict):
        raise ConfigError(f"{where}.settings", "must be a mapping")
    for key in raw_settings:
        if key in LITERAL_SECRETS:
            raise ConfigError(
                f"{where}.settings.{key}",
                f"secrets are not written in the configuration: set {key}_env to the name of an environment variable",
            )
    settings = _convert(raw_settings, SETTINGS_TYPES[kind], f"{where}.settings")
    if isinstance(settings, SmtpSettings):
        try:
            host, port = smtp_address(settings, environ)
        except InvalidInput as exc:
            raise ConfigError(f"{where}.settings.port", exc.reason) from None
        settings = msgspec.structs.replace(settings, host=host, port=port)
    delivery = _convert(raw.get("delivery") or {}, DeliveryPolicy, f"{where}.delivery")
    consent = raw.get("consent", DEFAULT_CONSENT_PURPOSES.get(CHANNELS[kind]))
    if consent is not None and (not isinstance(consent, str) or not consent.strip()):
        raise ConfigError(f"{where}.consent", "must name a consent purpose, or be none")
    consent = None if consent in (None, "none") else consent.strip()
    secrets = _secrets(settings, f"{where}.settings", environ)
    if isinstance(settings, AudienceSettings):
        try:
            check_target(settings, lambda env_field: secrets[env_field].value if env_field in secrets else None)
        except InvalidInput as exc:
            raise ConfigError(f"{where}.settings.{exc.field}", exc.reason) from None
    return DestinationConfig(name, kind, settings, delivery, consent, secrets)


def parse_destinations(raw: Any, environ: Mapping[str, str] | None = None) -> list[DestinationConfig]:
    """The destinations of a ``destinations:`` section (a list; None for an absent section)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError("destinations", "must be a list of destinations")
    env = os.environ if environ is None else environ
    configs = [_entry(item, f"destinations[{index}]", env) for index, item in enumerate(raw)]
    seen: set[str] = set()
    for index, config in enumerate(configs):
        if config.name in seen:
            raise ConfigError(f"destinations[{index}].name", f"{config.name!r} is declared twice")
        seen.add(config.name)
    return configs


def load_destinations(program: Path, environ: Mapping[str, str] | None = None) -> list[DestinationConfig]:
    """The destinations of the latest version in a program file; errors name file, line and field."""
    from loyalty_cdp.adapters.program_yaml import load_program_source

    source = load_program_source(program)
    raw = source.book.latest.program.extensions.get("destinations")
    try:
        return parse_destinations(raw, environ)
    except ConfigError as exc:
        raise source.error(len(source.lines) - 1, exc.field, exc.reason) from None


def find_destination(configs: list[DestinationConfig], name: str) -> DestinationConfig:
    for config in configs:
        if config.name == name:
            return config
    known = ", ".join(config.name for config in configs) or "none are configured"
    raise NotFound(f"no destination named {name!r} (known: {known})")
