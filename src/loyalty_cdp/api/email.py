"""Email tracking endpoints: the open pixel, the click redirect and unsubscribe (page and RFC 8058 one-click).

Public, like an email service provider's: no API key. What authorises a request is the link
itself: every link an email carries is signed (``adapters/destinations/email_tracking.py``),
so a forged or altered link answers 400 and records nothing, and the click endpoint only
redirects to targets the server signed (it is no open redirect).

- ``GET /v1/email/open``: appends ``Email Opened``, answers a 1x1 transparent GIF;
- ``GET /v1/email/click``: appends ``Email Link Clicked`` (``link_url``), redirects (302);
- ``GET /v1/email/unsubscribe``: a page with a confirmation button (mail scanners follow GET
  links, so a GET changes nothing);
- ``POST /v1/email/unsubscribe``: the button, or a mail client's RFC 8058 one-click POST
  (body ``List-Unsubscribe=One-Click``): appends ``Unsubscribed`` and a ``Consent Updated``
  withdrawing ``email_marketing``, which the dispatcher reads before every later send.

Every event's ``messageId`` derives from the email's message id, so repeats are stored once.
"""

from __future__ import annotations

import base64
import html
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from loyalty_cdp.adapters.destinations.email_tracking import CLICK_PATH, OPEN_PATH, UNSUBSCRIBE_PATH
from loyalty_cdp.errors import InvalidInput, StorageUnavailable

if TYPE_CHECKING:
    from loyalty_cdp.services.activation import Activation

router = APIRouter(tags=["email"])

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private", "Pragma": "no-cache"}
PUBLIC = {"security": []}  # no API key: the links are signed instead
MAX_PARAM = 1024  # four of them must fit uvicorn's URL limit whatever their characters
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The link is incomplete, altered or not signed by this server"},
    503: {"description": "This server has no email destination configured"},
}


def activation_of(request: Request) -> Activation:
    """The server's activation component; 503 when the server runs without one."""
    activation = getattr(request.app.state.components, "activation", None)
    if activation is None:
        raise StorageUnavailable("activation is not running on this server")
    return activation  # type: ignore[no-any-return]


def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    for key, value in params.items():
        if len(value) > MAX_PARAM:
            raise InvalidInput(key, f"must be at most {MAX_PARAM} characters")
    return params


def _now_ms() -> int:
    return int(time.time() * 1000)


M = Query(..., max_length=MAX_PARAM, description="The email's message id (signed)")
U = Query(..., max_length=MAX_PARAM, description="The member's user id (signed)")
D = Query(..., max_length=MAX_PARAM, description="The decision that sent the email (signed)")
S = Query(..., max_length=MAX_PARAM, description="HMAC-SHA256 signature of the link")


@router.get(OPEN_PATH, openapi_extra=PUBLIC,
            summary="Email open pixel: records Email Opened", response_class=Response,
            responses={200: {"content": {"image/gif": {}}, "description": "A 1x1 transparent GIF"}, **_ERRORS})
async def email_open(request: Request, m: str = M, u: str = U, d: str = D, s: str = S) -> Response:
    activation = activation_of(request)
    hit = activation.verify_link("open", _params(request))
    await activation.record(activation.tracking_calls(hit, _now_ms()))
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get(CLICK_PATH, openapi_extra=PUBLIC,
            summary="Email click redirect: records Email Link Clicked", response_class=Response,
            responses={302: {"description": "Redirect to the link's signed target"}, **_ERRORS})
async def email_click(request: Request, m: str = M, u: str = U, d: str = D,
                      url: str = Query(..., max_length=MAX_PARAM, description="The target (signed)"),
                      s: str = S) -> Response:
    activation = activation_of(request)
    hit = activation.verify_link("click", _params(request))
    target = hit.url or ""
    if not target.lower().startswith(("http://", "https://")):
        raise InvalidInput("url", "must be an http(s) URL")
    await activation.record(activation.tracking_calls(hit, _now_ms()))
    return RedirectResponse(target, status_code=302, headers=NO_STORE)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
        "content=\"width=device-width, initial-scale=1\"><title>" + html.escape(title) + "</title></head>"
        "<body style=\"font-family:Arial,Helvetica,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem\">"
        f"<h1 style=\"font-size:1.4rem\">{html.escape(title)}</h1>{body}</body></html>"
    )


@router.get(UNSUBSCRIBE_PATH, openapi_extra=PUBLIC,
            summary="Unsubscribe page: asks to confirm (changes nothing)",
            response_class=HTMLResponse, responses=_ERRORS)
async def unsubscribe_page(request: Request, m: str = M, u: str = U, d: str = D, s: str = S) -> Response:
    activation = activation_of(request)
    activation.verify_link("unsubscribe", _params(request))
    action = html.escape(str(request.url), quote=True)
    form = (
        "<p>Stop receiving marketing emails from us? You will still receive messages about your account.</p>"
        f"<form method=\"post\" action=\"{action}\">"
        "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
        "<button type=\"submit\" style=\"font-size:1rem;padding:.5rem 1rem\">Unsubscribe</button></form>"
    )
    return HTMLResponse(_page("Unsubscribe", form), headers=NO_STORE)


@router.post(UNSUBSCRIBE_PATH, openapi_extra=PUBLIC,
             summary="Unsubscribe (RFC 8058 one-click or the page's button): withdraws email consent",
             response_class=HTMLResponse, responses=_ERRORS)
async def unsubscribe(request: Request, m: str = M, u: str = U, d: str = D, s: str = S) -> Response:
    activation = activation_of(request)
    hit = activation.verify_link("unsubscribe", _params(request))
    await activation.record(activation.tracking_calls(hit, _now_ms()))
    done = "<p>You are unsubscribed: we will not send you marketing emails any more.</p>"
    return HTMLResponse(_page("Unsubscribed", done), headers=NO_STORE)
