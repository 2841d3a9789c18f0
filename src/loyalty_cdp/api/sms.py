"""Twilio-compatible SMS webhooks: inbound messages (STOP, START, HELP) and delivery status callbacks.

Public endpoints, as Twilio calls them: no API key. When the program configures a Twilio
destination, every request must carry a valid ``X-Twilio-Signature`` (base64 HMAC-SHA1, keyed
with the auth token, of the full URL Twilio requested followed by the sorted form fields);
an unsigned or forged request answers 403 and changes nothing. Behind a reverse proxy, the
server must see the public URL (``--proxy-headers``, ``X-Forwarded-Proto``/``Host``).

- ``POST /v1/sms/inbound`` (the number's "A message comes in" webhook): a message that is
  exactly one of Twilio's opt-out keywords (``STOP``, ``STOPALL``, ``UNSUBSCRIBE``, ``CANCEL``,
  ``END``, ``QUIT``, ``REVOKE``, ``OPTOUT``) puts the number on the STOP list, which every SMS
  destination checks before each send, and records the member's ``sms`` consent withdrawal;
  ``START``, ``YES``, ``UNSTOP`` take it off again and record the consent. Answers empty TwiML.
- ``POST /v1/sms/status?message_id=...`` (the ``StatusCallback`` of each message sent):
  ``delivered`` appends ``Message Delivered``; ``undelivered``/``failed`` append
  ``Message Failed`` (``Message Bounced`` for an unreachable handset); error 21610 (the
  recipient texted STOP to Twilio) also puts the number on the STOP list.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from loyalty_cdp.adapters.destinations.twilio import OPTED_OUT_CODE, callback_status, verify_request
from loyalty_cdp.api.email import activation_of
from loyalty_cdp.api.errors import json_response
from loyalty_cdp.core.messages import is_e164
from loyalty_cdp.errors import Forbidden, InvalidInput, PayloadTooLarge

router = APIRouter(tags=["sms"])

INBOUND_PATH = "/v1/sms/inbound"
STATUS_PATH = "/v1/sms/status"
MAX_FORM_BYTES = 64 * 1024
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
_FORM_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "additionalProperties": {
        "type": "string"}}}},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A required field is missing or malformed"},
    403: {"description": "X-Twilio-Signature is missing or does not match"},
    503: {"description": "This server runs without activation"},
}


async def _form(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidInput("content-type", "must be application/x-www-form-urlencoded, as Twilio sends")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge("body", f"must be at most {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("body", "is not a form-encoded body") from None
    return {key: values[-1] for key, values in fields.items()}


def _check_signature(request: Request, tokens: list[str], form: dict[str, str]) -> None:
    if not tokens:
        return
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        raise Forbidden("X-Twilio-Signature is required")
    url = str(request.url)
    if not any(verify_request(token, url, form, signature) for token in tokens):
        raise Forbidden("X-Twilio-Signature does not match this request")


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.post(INBOUND_PATH, summary="Twilio inbound SMS webhook: STOP / START keywords",
             openapi_extra={"requestBody": _FORM_BODY, "security": []},
             responses={200: {"content": {"text/xml": {}}, "description": "Empty TwiML"}, **_ERRORS})
async def inbound(request: Request) -> Response:
    activation = activation_of(request)
    form = await _form(request)
    _check_signature(request, activation.twilio_tokens, form)
    sender = form.get("From", "").strip()
    if not sender:
        raise InvalidInput("From", "is required")
    if "Body" not in form:
        raise InvalidInput("Body", "is required")
    if not is_e164(sender):
        raise InvalidInput("From", f"{sender[:40]!r} is not an E.164 phone number")
    if request.app.state.components.suppression.is_suppressed("phone", sender):
        return Response(EMPTY_TWIML, media_type="text/xml")  # an erased number is not stored again
    now = _now_ms()
    keyword = activation.opt_outs.record_inbound(sender, form["Body"], now)
    if keyword in ("stop", "start"):
        reference = form.get("MessageSid") or hashlib.blake2b(
            f"{sender}\x1f{form['Body']}\x1f{now}".encode(), digest_size=12).hexdigest()
        await activation.record(activation.sms_keyword_calls(sender, keyword, now, reference[:64]))
    return Response(EMPTY_TWIML, media_type="text/xml")


@router.post(STATUS_PATH, summary="Twilio message status callback: Message Delivered / Failed",
             openapi_extra={"requestBody": _FORM_BODY, "security": []}, responses=_ERRORS)
async def status_callback(
    request: Request,
    message_id: str = Query(..., min_length=1, max_length=64, description="Our message id (set in StatusCallback)"),
) -> Response:
    activation = activation_of(request)
    form = await _form(request)
    _check_signature(request, activation.twilio_tokens, form)
    if not form.get("MessageStatus"):
        raise InvalidInput("MessageStatus", "is required")
    now = _now_ms()
    code = form.get("ErrorCode", "")
    recipient = form.get("To", "").strip()
    if code.isdigit() and int(code) == OPTED_OUT_CODE and is_e164(recipient):
        activation.opt_outs.opt_out(recipient, now, f"twilio:{OPTED_OUT_CODE}")
    status = callback_status(form)
    recorded = False
    if status is not None:
        reason = f"Twilio {form['MessageStatus']}" + (f" (error {code})" if code else "")
        call = activation.delivery_call(message_id, status, now, reason=None if status.endswith("Delivered")
                                        else reason, provider_id=form.get("MessageSid") or None)
        if call is not None:
            await activation.record([call])
            recorded = True
    return json_response({"success": True, "recorded": recorded})
