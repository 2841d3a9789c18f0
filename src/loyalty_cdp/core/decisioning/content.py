"""Offer content: Jinja2 templates per channel, rendered over a member's context in a sandbox.

Templates run in Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment` with
``StrictUndefined``: a template may only read the variables of :data:`VARIABLES`, which is
checked when the configuration is loaded (an unknown name is a configuration error naming
the offer, the channel and the part), and a misspelt attribute fails the trial render
done at load time over a complete specimen context. ``None`` renders as an empty string,
so ``{{ first_name or "there" }}`` reads naturally. Parts named ``html`` or ending in
``_html`` are HTML-escaped; other parts are plain text.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.environment import Template
from jinja2.sandbox import SandboxedEnvironment

from loyalty_cdp.errors import InvalidInput

VARIABLES: dict[str, str] = {
    "first_name": "the member's first name (traits first_name, firstName, or the first word of name)",
    "last_name": "the member's last name (traits last_name or lastName)",
    "tier": "the member's tier",
    "next_tier": "the tier above, or none at the top",
    "points_balance": "spendable points",
    "points_value": "what the spendable points are worth, in the program currency",
    "currency": "the program currency (USD)",
    "tier_metric": "what qualifies for tiers: tier_points, qualifying_spend or purchase_count",
    "to_next_tier": "what the member still needs for the next tier, in the tier metric's unit",
    "points_to_next_tier": "points still needed for the next tier (when the metric is tier_points)",
    "spend_to_next_tier": "spend still needed for the next tier (when the metric is qualifying_spend)",
    "favourite_category": "the category with the largest share of the member's purchase affinity",
    "favourite_brand": "the brand with the largest share of the member's purchase affinity",
    "running_low": "the product running low: product_id, name, category, due_at (date), days_left, "
                   "last_purchase (date)",
    "wishlist_item": "the wishlisted product whose price dropped: product_id, name, category, old_price, "
                     "new_price, drop_percent",
    "offer": "the offer: id, name, multiplier, bonus_points, valid_until (date), categories, brands",
    "event": "the properties of the triggering event (to_tier, milestone_id, points...)",
    "channel": "the channel the content is for",
}

SPECIMEN: dict[str, Any] = {
    "first_name": "Ann", "last_name": "Lee", "tier": "Gold", "next_tier": "Platinum", "points_balance": 1200,
    "points_value": 12.0, "currency": "USD", "tier_metric": "qualifying_spend", "to_next_tier": 250.0,
    "points_to_next_tier": None, "spend_to_next_tier": 250.0, "favourite_category": "Pet Food",
    "favourite_brand": "Northroast",
    "running_low": {"product_id": "PET-00001", "name": "Dog food 12kg", "category": "Pet Food",
                    "due_at": "2026-07-30", "days_left": 2, "last_purchase": "2026-07-02"},
    "wishlist_item": {"product_id": "HOM-00002", "name": "Linen throw", "category": "Home", "old_price": 60.0,
                      "new_price": 45.0, "drop_percent": 25.0},
    "offer": {"id": "specimen", "name": "Double points", "multiplier": 2.0, "bonus_points": 200,
              "valid_until": "2026-08-02", "categories": ["Pet Food"], "brands": []},
    "channel": "email",
}
# The properties of the events triggers listen to (docs/loyalty.md, docs/segments.md), typed as sent.
EVENT_SPECIMEN: dict[str, Any] = {
    "from_tier": "Silver", "to_tier": "Gold", "tier": "Gold", "metric": "qualifying_spend", "metric_value": 1510.0,
    "threshold": 1500.0, "needed": 120.0, "multiplier": 1.5, "free_shipping": True,
    "review_at": "2026-12-31T23:59:59.999Z", "downgrade_to": "Silver", "grace_days": 30,
    "milestone_id": "tenth-purchase", "milestone_type": "nth_purchase", "bonus_points": 250, "n": 10,
    "points": 500, "points_balance": 1200, "expires_at": "2026-09-30T23:59:59.999Z", "reason": "reward",
    "reward_id": "five-off", "reward_name": "$5 off your next order", "code": "SAVE5-ABCD-EFGH", "value": 5.0,
    "currency": "USD", "segment_id": "at-risk", "segment_name": "At-risk members", "entry": 1,
    "product_id": "HOM-00002", "name": "Linen throw", "category": "Home", "price": 45.0, "previous_price": 60.0,
}
# What a template may raise while rendering values it did not expect (a text where a number was).
RENDER_ERRORS = (TemplateError, TypeError, ValueError, ArithmeticError, LookupError)


class _AnyEvent(dict[str, Any]):
    """The trial render's ``event``: the known properties, and a text for any other key (custom
    events carry properties nobody can list in advance)."""

    def __missing__(self, key: str) -> str:
        return "specimen"


def _blank_none(value: Any) -> Any:
    return "" if value is None else value


_TEXT = SandboxedEnvironment(undefined=StrictUndefined, finalize=_blank_none, autoescape=False)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, finalize=_blank_none, autoescape=True)


class ContentError(InvalidInput):
    """Content that cannot be rendered: ``field`` names the offer's channel and part."""


def _environment(part: str) -> SandboxedEnvironment:
    return _HTML if part == "html" or part.endswith("_html") else _TEXT


def compile_content(content: dict[str, dict[str, str]], field: str) -> dict[str, dict[str, Template]]:
    """Each channel's parts compiled, after checking the variables and a trial render."""
    compiled: dict[str, dict[str, Template]] = {}
    for channel, parts in content.items():
        if not parts:
            raise InvalidInput(f"{field}.{channel}", "give at least one part (subject, body, title...)")
        compiled[channel] = {}
        for part, source in parts.items():
            where = f"{field}.{channel}.{part}"
            environment = _environment(part)
            try:
                tree = environment.parse(source)
            except TemplateError as exc:
                raise InvalidInput(where, f"template syntax error: {exc}") from None
            unknown = sorted(meta.find_undeclared_variables(tree) - VARIABLES.keys())
            if unknown:
                raise InvalidInput(where, f"unknown template variable {unknown[0]!r}; "
                                          f"known: {', '.join(sorted(VARIABLES))}")
            template = environment.from_string(source)
            try:
                template.render({**SPECIMEN, "event": _AnyEvent(EVENT_SPECIMEN), "channel": channel})
            except TemplateError as exc:
                raise InvalidInput(where, f"template fails on a complete member: {exc}") from None
            compiled[channel][part] = template
    return compiled


def render(parts: dict[str, Template], context: dict[str, Any], field: str) -> dict[str, str]:
    """Every part rendered over ``context``; a failure is a :class:`ContentError` naming ``field``."""
    rendered: dict[str, str] = {}
    for part, template in parts.items():
        try:
            rendered[part] = template.render(context)
        except RENDER_ERRORS as exc:
            raise ContentError(f"{field}.{part}", str(exc)) from None
    return rendered


def _first(values: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = values.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _top(shares: Any) -> str | None:
    if not isinstance(shares, dict) or not shares:
        return None
    top: str = min(shares.items(), key=lambda item: (-item[1], item[0]))[0]
    return top


def member_context(traits: dict[str, Any], loyalty: dict[str, Any], signals: dict[str, Any],
                   running_low: dict[str, Any] | None, wishlist_item: dict[str, Any] | None,
                   offer: dict[str, Any], event: dict[str, Any], channel: str) -> dict[str, Any]:
    """The template variables (:data:`VARIABLES`) of one member, offer and channel."""
    name = _first(traits, "name")
    first_name = _first(traits, "first_name", "firstName") or (name.split()[0] if name else None)
    found = loyalty.get("progress")
    progress: dict[str, Any] = found if isinstance(found, dict) else {}
    metric, remaining = progress.get("metric"), progress.get("remaining")
    affinity = signals.get("affinity", {})
    return {
        "first_name": first_name,
        "last_name": _first(traits, "last_name", "lastName"),
        "tier": loyalty.get("tier"),
        "next_tier": progress.get("next_tier"),
        "points_balance": loyalty.get("points_balance", 0),
        "points_value": loyalty.get("points_value"),
        "currency": loyalty.get("currency"),
        "tier_metric": metric,
        "to_next_tier": remaining,
        "points_to_next_tier": remaining if metric == "tier_points" else None,
        "spend_to_next_tier": remaining if metric == "qualifying_spend" else None,
        "favourite_category": _top(affinity.get("category")),
        "favourite_brand": _top(affinity.get("brand")),
        "running_low": running_low,
        "wishlist_item": wishlist_item,
        "offer": offer,
        "event": event,
        "channel": channel,
    }
