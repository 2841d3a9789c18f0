"""POS CSV mapping: rows grouped into valid ``Order Completed`` calls, every bad row reported."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.adapters.pos_csv import LineError, ParsedOrder, message_id, read_orders
from loyalty_cdp.core.events import normalise
from loyalty_cdp.errors import InvalidInput

HEADER = ("order_id,card_number,member_id,timestamp,store_id,sku,product_id,name,category,"
          "brand,price,quantity,discount,currency")


def parse(text: str) -> list[ParsedOrder]:
    return list(read_orders(io.StringIO(text, newline="")))


def test_lines_of_one_order_become_one_pos_order_completed() -> None:
    (order,) = parse(
        f"{HEADER}\n"
        "1001,6035 1234 5678 9012,M42,2026-01-05 10:15:00,S001,PF-1,P1,Dog Food,Pet Food,"
        "Barkley,39.99,1,,usd\n"
        "1001,6035 1234 5678 9012,M42,2026-01-05 10:15:00,S001,COF-2,P2,Espresso,Coffee,"
        "Northroast,12.50,2,2.50,usd\n"
    )
    assert order.errors == [] and order.lines == [2, 3]
    call = order.call
    assert call is not None
    assert call["type"] == "track" and call["event"] == "Order Completed"
    assert call["userId"] == "M42" and "anonymousId" not in call
    assert call["timestamp"] == "2026-01-05T10:15:00.000Z"
    assert call["messageId"] == message_id("S001", "1001")
    assert call["context"] == {"channel": "pos", "externalIds": [
        {"id": "6035123456789012", "type": "card_number", "collection": "users",
         "encoding": "none"}]}
    assert call["properties"] == {
        "order_id": "1001", "total": 62.49, "discount": 2.5, "currency": "USD",
        "store_id": "S001",
        "products": [
            {"product_id": "P1", "sku": "PF-1", "name": "Dog Food", "category": "Pet Food",
             "brand": "Barkley", "price": 39.99, "quantity": 1},
            {"product_id": "P2", "sku": "COF-2", "name": "Espresso", "category": "Coffee",
             "brand": "Northroast", "price": 12.5, "quantity": 2, "discount": 2.5},
        ],
    }
    event = normalise(call, call_type=None, received_at=0, default_message_id="unused")
    assert event.channel == "pos" and event.user_id == "M42"


def test_rows_are_grouped_by_store_and_order_even_when_interleaved() -> None:
    orders = parse(
        "order_id,store_id,card_number,timestamp,sku,price\n"
        "1,S1,1111,2026-01-01T10:00:00Z,A,1.00\n"
        "1,S2,2222,2026-01-01T10:00:00Z,A,1.00\n"
        "1,S1,1111,2026-01-01T10:00:00Z,B,2.00\n"
    )
    assert [order.lines for order in orders] == [[2, 4], [3]]
    first, second = (order.call for order in orders)
    assert first is not None and second is not None
    assert first["properties"]["total"] == 3.0 and second["properties"]["total"] == 1.0
    assert first["messageId"] != second["messageId"]
    # Only a card: the call still needs an id, and the card is what identity resolution uses.
    assert first["anonymousId"] == "card-1111" and "userId" not in first
    assert first["properties"]["currency"] == "USD"


def test_a_pos_customer_id_is_the_anonymous_id() -> None:
    (order,) = parse("order_id,pos_customer_id,timestamp,sku,price\n7,POS99,2026-01-01,A,3\n")
    assert order.call is not None and order.call["anonymousId"] == "POS99"
    assert order.call["context"]["externalIds"] == [
        {"id": "POS99", "type": "pos_customer_id", "collection": "users", "encoding": "none"}
    ]


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ("1,,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,1.00,x,,USD", "quantity", "whole number"),
        ("1,,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,1.00,0,,USD", "quantity", "whole number"),
        ("1,,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,abc,1,,USD", "price", "not a number"),
        ("1,,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,-1,1,,USD", "price", ">= 0"),
        ("1,,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,NaN,1,,USD", "price", ">= 0"),
        ("1,,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,5,1,6,USD", "discount", "more than"),
        ("1,,M1,yesterday,S1,A,,n,c,b,5,1,,USD", "timestamp", "ISO-8601"),
        ("1,,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,5,1,,dollars", "currency", "ISO 4217"),
        ("1,12ab,,2026-01-05T10:00:00Z,S1,A,,n,c,b,5,1,,USD", "card_number", "digits"),
        ("1,,,2026-01-05T10:00:00Z,S1,A,,n,c,b,5,1,,USD", "member_id", "is required"),
        ("1,,M1,2026-01-05T10:00:00Z,S1,,,n,c,b,5,1,,USD", "sku", "is required"),
        (",,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,5,1,,USD", "order_id", "is required"),
        ("1,,M1,2026-01-05T10:00:00Z,S1,A,,n,c,b,5,1,USD", "", "has 13 fields"),
    ],
)
def test_a_bad_row_is_reported_with_line_field_and_reason(
    row: str, field: str, reason: str
) -> None:
    (order,) = parse(f"{HEADER}\n{row}\n")
    assert order.call is None
    (error,) = order.errors
    assert error.line == 2 and error.field == field and reason in error.reason


def test_one_bad_line_rejects_its_whole_order_and_only_that_order() -> None:
    orders = parse(
        "order_id,member_id,timestamp,sku,price,quantity\n"
        "1,M1,2026-01-01T10:00:00Z,A,1.00,1\n"
        "1,M1,2026-01-01T10:00:00Z,B,2.00,many\n"
        "1,M2,2026-01-01T10:00:00Z,C,2.00,1\n"
        "2,M1,2026-01-01T11:00:00Z,A,1.00,1\n"
    )
    rejected, accepted = orders
    assert rejected.call is None and accepted.call is not None
    assert rejected.errors == [
        LineError(2, "order_id", "order '1' rejected: line 3, 4 is invalid"),
        LineError(3, "quantity", "must be a whole number >= 1, got 'many'"),
        LineError(4, "member_id", "differs from the order's first line ('M1', line 2)"),
    ]


def test_invalid_utf8_is_reported_per_line() -> None:
    raw = b"order_id,member_id,timestamp,sku,price\n1,M\xff,2026-01-01,A,1\n2,M2,2026-01-01,A,1\n"
    stream = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="surrogateescape",
                              newline="")
    bad, good = read_orders(stream)
    assert bad.errors == [LineError(2, "", "is not valid UTF-8")] and good.call is not None


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("order_id,member_id,timestamp,sku,price,qty", "unknown column(s) qty"),
        ("order_id,member_id,timestamp,sku", "missing column(s): price"),
        ("order_id,timestamp,sku,price", "member_id or card_number or pos_customer_id"),
        ("order_id,member_id,timestamp,price", "sku or product_id"),
        ("order_id,member_id,timestamp,sku,price,price", "price appear twice"),
        ("", "the file is empty"),
    ],
)
def test_a_bad_header_rejects_the_file(header: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(f"{header}\n" if header else "")
    assert caught.value.field == "header" and reason in caught.value.reason


def test_blank_lines_are_skipped_and_line_numbers_count_physical_lines() -> None:
    orders = parse(
        'order_id,member_id,timestamp,sku,name,price\n\n1,M1,2026-01-01,A,"two\nlines",1\n'
        "2,M1,2026-01-01,A,x,bad\n"
    )
    assert orders[0].lines == [3] and orders[0].call is not None
    assert orders[0].call["properties"]["products"][0]["name"] == "two\nlines"
    assert orders[1].lines == [5] and orders[1].errors[0] == LineError(
        5, "price", "'bad' is not a number"
    )


money = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.tuples(money, st.integers(1, 50), st.floats(0, 1)), min_size=1,
                      max_size=30))
def test_totals_are_exact_and_every_order_is_a_valid_segment_call(
    lines: list[tuple[Decimal, int, float]],
) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["order_id", "member_id", "timestamp", "sku", "price", "quantity", "discount"])
    expected_total = expected_discount = Decimal(0)
    for index, (price, quantity, share) in enumerate(lines):
        discount = (price * quantity * Decimal(str(share))).quantize(Decimal("0.01"), "ROUND_DOWN")
        writer.writerow(["9", "M1", "2026-01-01T00:00:00Z", f"S{index}", price, quantity,
                         discount])
        expected_total += price * quantity - discount
        expected_discount += discount
    out.seek(0)
    (order,) = read_orders(out)
    assert order.call is not None, order.errors
    assert order.call["properties"]["total"] == float(expected_total)
    assert order.call["properties"]["discount"] == float(expected_discount)
    assert len(order.call["properties"]["products"]) == len(lines)
    normalise(order.call, call_type=None, received_at=0, default_message_id="unused")
