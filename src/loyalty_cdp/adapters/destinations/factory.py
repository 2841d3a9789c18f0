"""Builds the destination objects a parsed configuration describes (the only place that knows every type)."""

from __future__ import annotations

from pathlib import Path

from loyalty_cdp.adapters.destinations.base import Destination
from loyalty_cdp.adapters.destinations.config import DestinationConfig
from loyalty_cdp.adapters.destinations.email_tracking import TrackingLinks
from loyalty_cdp.adapters.destinations.fcm import AccessToken, FcmDestination
from loyalty_cdp.adapters.destinations.smtp import SmtpDestination
from loyalty_cdp.adapters.destinations.twilio import SmsOptOutStore, TwilioDestination
from loyalty_cdp.adapters.destinations.webhook import WebhookDestination
from loyalty_cdp.errors import ConfigError

SMS_OPT_OUTS_FILE = "sms_optouts.db"


def sms_opt_out_store(data_dir: Path) -> SmsOptOutStore:
    """The store of numbers that texted STOP (the inbound-SMS endpoint opens it too)."""
    return SmsOptOutStore(Path(data_dir) / SMS_OPT_OUTS_FILE)


def open_destination(config: DestinationConfig, data_dir: Path) -> Destination:
    """The message destination ``config`` describes; it owns its connections until ``aclose``."""
    s, timeout, purpose = config.settings, config.delivery.timeout_s, config.consent_purpose
    if config.type == "smtp":
        links = None
        if s.tracking_base_url:
            secret = config.secret("tracking_secret_env")
            if secret is None:
                raise ConfigError(f"{config.name}.settings.tracking_secret_env", "tracking needs a secret")
            links = TrackingLinks(s.tracking_base_url, secret)
        return SmtpDestination(
            config.name, host=s.host, port=s.port, sender=s.from_address, sender_name=s.from_name,
            reply_to=s.reply_to, security=s.security, username=s.username, password=config.secret("password_env"),
            ca_file=s.ca_file, links=links, unsubscribe_mailto=s.unsubscribe_mailto, track_opens=s.track_opens,
            track_clicks=s.track_clicks, consent_purpose=purpose, timeout_s=timeout,
            concurrency=config.delivery.concurrency,
        )
    if config.type == "twilio":
        return TwilioDestination(
            config.name, account_sid=s.account_sid, auth_token=config.secret("auth_token_env") or "",
            opt_outs=sms_opt_out_store(data_dir), api_key_sid=s.api_key_sid, from_number=s.from_number,
            messaging_service_sid=s.messaging_service_sid, base_url=s.base_url,
            status_callback_url=s.status_callback_url, quiet_hours=s.quiet_hours, consent_purpose=purpose,
            timeout_s=timeout,
        )
    if config.type == "fcm":
        path = Path(s.access_token_file) if s.access_token_file else None
        token = AccessToken(config.secret("access_token_env"), path)
        return FcmDestination(
            config.name, project_id=s.project_id, token=token, base_url=s.base_url, consent_purpose=purpose,
            timeout_s=timeout,
        )
    if config.type == "webhook":
        return WebhookDestination(
            config.name, s.url, config.secret("secret_env") or "", allow_networks=s.allow_networks,
            signature_header=s.signature_header, consent_purpose=purpose, timeout_s=timeout,
        )
    raise ConfigError(f"{config.name}.type", f"{config.type} destinations export files; use audience_destination")
