"""POS transaction CSV to Segment ``Order Completed`` calls: the column mapping of docs/import.md.

One row per order line. Rows sharing ``store_id`` and ``order_id`` form one order (they need
not be adjacent) and become one ``Order Completed`` with ``context.channel = "pos"``. A row
that breaks a rule is reported with its line number, column and reason, and rejects its
whole order (an order missing a line would carry a wrong total). The ``messageId`` of an
order is derived from its store and order id, so importing the file again, or a corrected
export of it, never counts an order twice.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from loyalty_cdp.core.events import format_time, parse_time
from loyalty_cdp.errors import InvalidInput

IDENTITY_COLUMNS = ("member_id", "card_number", "pos_customer_id")
PRODUCT_COLUMNS = ("sku", "product_id")
REQUIRED_COLUMNS = ("order_id", "timestamp", "price")
OPTIONAL_COLUMNS = (
    *IDENTITY_COLUMNS, *PRODUCT_COLUMNS, "store_id", "name", "category", "brand",
    "quantity", "discount", "currency",
)
# Values every line of one order must agree on.
ORDER_COLUMNS = ("timestamp", "member_id", "card_number", "pos_customer_id", "currency")
DEFAULT_CURRENCY = "USD"
MAX_TEXT = 256
_CURRENCY = re.compile(r"[A-Z]{3}")
_CARD_SEPARATORS = re.compile(r"[\s-]")


@dataclass(frozen=True)
class LineError:
    line: int
    field: str
    reason: str


@dataclass
class ParsedOrder:
    """The outcome for one order: its call, or the errors that rejected it."""

    lines: list[int]
    call: dict[str, Any] | None = None
    errors: list[LineError] = field(default_factory=list)


def check_header(header: list[str]) -> list[str]:
    """The column names, stripped; :class:`InvalidInput` for missing or unknown columns."""
    columns = [name.strip() for name in header]
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
    unknown = [name for name in columns if name not in known]
    if unknown:
        raise InvalidInput("header", f"unknown column(s) {', '.join(unknown)}; the columns are "
                                     f"{', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise InvalidInput("header", f"column(s) {', '.join(duplicated)} appear twice")
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if not any(name in columns for name in IDENTITY_COLUMNS):
        missing.append(" or ".join(IDENTITY_COLUMNS))
    if not any(name in columns for name in PRODUCT_COLUMNS):
        missing.append(" or ".join(PRODUCT_COLUMNS))
    if missing:
        raise InvalidInput("header", f"missing column(s): {', '.join(missing)}")
    return columns


def _amount(row: dict[str, str], column: str, default: str | None = None) -> Decimal:
    text = row.get(column) or default
    if text is None:
        raise InvalidInput(column, "is required")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidInput(column, f"{text[:40]!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise InvalidInput(column, f"must be a number >= 0, got {text[:40]!r}")
    return value


def _line(row: dict[str, str]) -> tuple[dict[str, Any], Decimal, Decimal]:
    """One row as a ``products[]`` entry, with its gross amount and discount."""
    for column, value in row.items():
        if len(value) > MAX_TEXT:
            raise InvalidInput(column, f"is longer than {MAX_TEXT} characters")
    if not (row.get("sku") or row.get("product_id")):
        raise InvalidInput("sku", "sku or product_id is required")
    price = _amount(row, "price")
    quantity_text = row.get("quantity") or "1"
    if not quantity_text.isdigit() or int(quantity_text) < 1:
        raise InvalidInput("quantity", f"must be a whole number >= 1, got {quantity_text[:40]!r}")
    quantity = int(quantity_text)
    discount = _amount(row, "discount", "0")
    if discount > price * quantity:
        raise InvalidInput("discount", f"{discount} is more than the line's {price * quantity}")
    line: dict[str, Any] = {key: row[key] for key in ("product_id", "sku") if row.get(key)}
    line.update({key: row[key] for key in ("name", "category", "brand") if row.get(key)})
    line["price"] = float(price)
    line["quantity"] = quantity
    if discount:
        line["discount"] = float(discount)
    return line, price * quantity, discount


def _order_fields(row: dict[str, str]) -> dict[str, str]:
    """The order-level values of a row, validated and normalised."""
    if not row.get("order_id"):
        raise InvalidInput("order_id", "is required")
    if not any(row.get(column) for column in IDENTITY_COLUMNS):
        raise InvalidInput(
            "member_id", "one of member_id, card_number, pos_customer_id is required"
        )
    values = {column: row.get(column, "") for column in ORDER_COLUMNS}
    values["timestamp"] = format_time(parse_time(row.get("timestamp"), "timestamp"))
    if values["card_number"]:
        card = _CARD_SEPARATORS.sub("", values["card_number"])
        if not card.isdigit() or not 4 <= len(card) <= 32:
            raise InvalidInput("card_number", "must be 4 to 32 digits (spaces and dashes allowed)")
        values["card_number"] = card
    currency = (values["currency"] or DEFAULT_CURRENCY).upper()
    if not _CURRENCY.fullmatch(currency):
        raise InvalidInput("currency", f"must be a three-letter ISO 4217 code, got {currency!r}")
    values["currency"] = currency
    return values


def message_id(store_id: str, order_id: str) -> str:
    digest = hashlib.sha256(f"{store_id}\x1f{order_id}".encode()).hexdigest()
    return f"pos-{digest[:40]}"


def _order_call(store_id: str, order_id: str, fields: dict[str, str],
                lines: list[tuple[dict[str, Any], Decimal, Decimal]]) -> dict[str, Any]:
    gross = sum((amount for _, amount, _ in lines), Decimal(0))
    discount = sum((line_discount for _, _, line_discount in lines), Decimal(0))
    properties: dict[str, Any] = {
        "order_id": order_id,
        "total": float(gross - discount),
        "discount": float(discount),
        "currency": fields["currency"],
        "products": [product for product, _, _ in lines],
    }
    if store_id:
        properties["store_id"] = store_id
    context: dict[str, Any] = {"channel": "pos"}
    card = fields["card_number"]
    external_ids = [
        {"id": value, "type": kind, "collection": "users", "encoding": "none"}
        for kind, value in (("card_number", card), ("pos_customer_id", fields["pos_customer_id"]))
        if value
    ]
    if external_ids:
        context["externalIds"] = external_ids
    call: dict[str, Any] = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id(store_id, order_id),
        "timestamp": fields["timestamp"],
    }
    if fields["member_id"]:
        call["userId"] = fields["member_id"]
    if fields["pos_customer_id"]:
        call["anonymousId"] = fields["pos_customer_id"]
    elif not fields["member_id"]:
        call["anonymousId"] = f"card-{card}"
    call["context"] = context
    call["properties"] = properties
    return call


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str] | LineError]]:
    """(line number, row or error) for each record after the header."""
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("header", "the file is empty") from None
    columns = check_header(header)
    last_line = reader.line_num
    for record in reader:
        number, last_line = last_line + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(columns):
            yield number, LineError(
                number, "", f"has {len(record)} fields, the header has {len(columns)}"
            )
            continue
        try:
            "".join(record).encode()
        except UnicodeEncodeError:
            yield number, LineError(number, "", "is not valid UTF-8")
            continue
        yield number, {c: cell.strip() for c, cell in zip(columns, record, strict=True)}


def read_orders(lines: Iterable[str]) -> Iterator[ParsedOrder]:
    """Group the CSV's rows into orders and map each one; see the module docstring.

    ``lines`` is the text of the file (open it with ``newline=""`` and, to report invalid
    UTF-8 per line, ``errors="surrogateescape"``). Raises :class:`InvalidInput` for a bad
    header; every other problem is reported in the :class:`ParsedOrder` it rejects.
    """
    orders: dict[tuple[str, str], list[tuple[int, dict[str, str]]]] = {}
    for number, row in _rows(lines):
        if isinstance(row, LineError):
            yield ParsedOrder([number], errors=[row])
            continue
        orders.setdefault((row.get("store_id", ""), row.get("order_id", "")), []).append(
            (number, row)
        )
    for (store_id, order_id), rows in orders.items():
        yield _parse_order(store_id, order_id, rows)


def _parse_order(
    store_id: str, order_id: str, rows: list[tuple[int, dict[str, str]]]
) -> ParsedOrder:
    result = ParsedOrder([number for number, _ in rows])
    first: dict[str, str] | None = None
    lines = []
    for number, row in rows:
        try:
            fields = _order_fields(row)
            if first is None:
                first = fields
            for column in ORDER_COLUMNS:
                if fields[column] != first[column]:
                    raise InvalidInput(column, f"differs from the order's first line "
                                               f"({first[column]!r}, line {rows[0][0]})")
            lines.append(_line(row))
        except InvalidInput as exc:
            result.errors.append(LineError(number, exc.field, exc.reason))
    if first is None or result.errors:
        invalid = sorted({error.line for error in result.errors})
        listed = ", ".join(map(str, invalid))
        result.errors.extend(
            LineError(number, "order_id", f"order {order_id!r} rejected: line {listed} is invalid")
            for number in result.lines if number not in invalid
        )
        result.errors.sort(key=lambda error: error.line)
        return result
    result.call = _order_call(store_id, order_id, first, lines)
    return result
