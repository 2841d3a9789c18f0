"""The program file: the shipped retail program loads; errors name file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from loyalty_support import at

from loyalty_cdp.adapters.program_yaml import (
    ProgramFileError,
    load_program,
    load_program_source,
    parse_program,
)
from loyalty_cdp.core.loyalty.program import DaysAfterEarn, EndOfMonth, MultiplierRule
from loyalty_cdp.errors import ConfigError
from loyalty_cdp.programs import retail_program_path

GOOD = """\
program: shop
version: 1
effective_from: 2026-01-01
earn:
  points_per_unit: 1
  rules:
    - id: pet
      type: multiplier
      multiplier: 2
      match: {categories: [Pet Food]}
ledger:
  expiry: {policy: days_after_earn, days: 365}
tiers:
  metric: qualifying_spend
  window: calendar_year
  levels:
    - {name: Member, threshold: 0}
    - {name: Silver, threshold: 500}
    - {name: Gold, threshold: 1500}
milestones:
  - {id: first, type: nth_purchase, n: 1}
"""


def error_for(text: str, file: str = "shop.yaml") -> ProgramFileError:
    with pytest.raises(ProgramFileError) as caught:
        parse_program(text, file)
    return caught.value


def line_of(text: str, marker: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if marker in line)


def test_the_shipped_retail_program_loads() -> None:
    source = load_program_source(retail_program_path())
    book = source.book
    assert book.program_id == "northwind-rewards"
    assert [v.program.version for v in book.versions] == [1, 2]
    assert book.at(at("2026-05-31T23:59")).program.version == 1
    assert book.at(at("2026-06-01")).program.version == 2
    assert book.at(at("2020-01-01")).program.version == 1  # before launch: the first version
    retail = book.latest.program
    assert [tier.name for tier in retail.tiers.levels] == ["Member", "Silver", "Gold", "Platinum"]
    assert isinstance(retail.ledger.expiry, EndOfMonth)
    assert {"Order Completed", "Product Reviewed", "Product Added to Wishlist"} <= (
        book.relevant_events
    )
    assert source.line_of(1, "earn.rules[1].id") == line_of(
        retail_program_path().read_text(), "id: wishlist-3x"
    )


def test_a_good_document_becomes_typed_objects() -> None:
    program = parse_program(GOOD).book.latest.program
    rule = program.earn.rules[0]
    assert isinstance(rule, MultiplierRule)
    assert (rule.multiplier, rule.match.categories) == (2.0, frozenset({"Pet Food"}))
    assert program.ledger.expiry == DaysAfterEarn(days=365)
    assert program.tiers.levels[2].threshold == 1500


@pytest.mark.parametrize(
    ("old", "new", "marker", "field", "reason"),
    [
        ("      multiplier: 2", "      multipier: 2", "multipier", "earn.rules[0].multipier",
         "unknown key 'multipier'; did you mean 'multiplier'?"),
        ("  points_per_unit: 1", "  points_per_unit: lots", "points_per_unit",
         "earn.points_per_unit", "expected float, got str"),
        ("  window: calendar_year", "  window: weekly", "window:", "tiers.window",
         "invalid value 'weekly'; must be one of anniversary, calendar_year, rolling_12_months"),
        ("    - {name: Gold, threshold: 1500}", "    - {name: Gold, threshold: 400}",
         "name: Gold", "tiers.levels[2].threshold", "must be above the previous tier's (500)"),
        ("  - {id: first, type: nth_purchase, n: 1}", "  - {id: first, type: nth_purchase}",
         "id: first", "milestones[0].n", "required key is missing"),
        ("  - {id: first, type: nth_purchase, n: 1}", "  - {id: first, type: nth, n: 1}",
         "id: first", "milestones[0].type", "must be one of nth_purchase, lifetime_points"),
        ("  expiry: {policy: days_after_earn, days: 365}", "  expiry: {policy: weekly}",
         "expiry:", "ledger.expiry.policy", "must be one of none, days_after_earn"),
        ("      multiplier: 2", "      multiplier: 0.5", "multiplier:", "earn.rules[0].multiplier",
         "must be at least 1, got 0.5"),
        ("      multiplier: 2", "      multiplier: 2.0001", "multiplier:",
         "earn.rules[0].multiplier", "must have at most 3 decimal places"),
        ("ledger:", "ledgers:", "ledgers:", "ledgers", "unknown key 'ledgers'; did you mean 'ledger'?"),
        ("      match: {categories: [Pet Food]}", "      match: {category: [Pet Food]}",
         "match:", "earn.rules[0].match.category", "did you mean 'categories'?"),
        ("      type: multiplier", "      type: multiplier\n      days_of_week: [sunday]",
         "days_of_week", "earn.rules[0].days_of_week[0]", "must be one of mon, tue, wed"),
    ],
)
def test_errors_name_file_line_and_field(
    old: str, new: str, marker: str, field: str, reason: str
) -> None:
    text = GOOD.replace(old, new)
    assert text != GOOD
    error = error_for(text)
    assert isinstance(error, ConfigError)
    assert (error.file, error.line, error.field) == ("shop.yaml", line_of(text, marker), field)
    assert reason in error.reason
    assert str(error).startswith(f"shop.yaml:{line_of(text, marker)}: {field}: ")


def test_duplicate_keys_and_bad_yaml_are_reported_where_they_are() -> None:
    text = GOOD.replace("version: 1\n", "version: 1\nversion: 2\n")
    error = error_for(text)
    assert (error.line, error.field, error.reason) == (3, "version", "duplicate key")
    error = error_for(GOOD.replace("  points_per_unit: 1", "  points_per_unit: [1"))
    assert error.line >= line_of(GOOD, "points_per_unit")
    assert error.reason.startswith("invalid YAML")
    error = error_for("- just\n- a list\n")
    assert (error.line, error.reason) == (1, "a program document must be a mapping")


def test_future_sections_are_kept_and_other_top_level_keys_rejected() -> None:
    text = GOOD + "segments:\n  vip: {tier: Gold}\noffers: []\n"
    source = parse_program(text)
    assert source.book.latest.program.extensions == {"segments": {"vip": {"tier": "Gold"}},
                                                     "offers": []}
    error = source.error(0, "segments.vip.tier", "no such tier")
    assert str(error) == f"<string>:{line_of(text, 'vip:')}: segments.vip.tier: no such tier"
    assert error_for(GOOD + "segmnts: {}\n").reason.startswith("unknown key 'segmnts'")
    assert error_for(GOOD + "extensions: {}\n").field == "extensions"


def test_versions_must_move_forward() -> None:
    second = GOOD.replace("version: 1", "version: 2").replace("2026-01-01", "2025-06-01")
    text = GOOD + "---\n" + second
    error = error_for(text)
    expected_line = len(GOOD.splitlines()) + 1 + line_of(second, "effective_from")
    assert (error.line, error.field) == (expected_line, "effective_from")
    assert error.reason == "must be after 2026-01-01"
    other = GOOD.replace("program: shop", "program: other").replace("version: 1", "version: 2")
    assert error_for(GOOD + "---\n" + other.replace("2026-01-01", "2027-01-01")).field == "program"


def test_unknown_tier_names_and_duplicate_ids_are_errors() -> None:
    text = GOOD.replace("      match: {categories: [Pet Food]}", "      tiers: [Platinum]")
    error = error_for(text)
    assert (error.field, error.line) == ("earn.rules[0].tiers", line_of(text, "Platinum"))
    text = GOOD + "  - {id: first, type: nth_purchase, n: 2}\n"
    assert error_for(text).field == "milestones[1].id"


def test_reading_a_file(tmp_path: Path) -> None:
    path = tmp_path / "program.yaml"
    path.write_text(GOOD)
    assert load_program(path).program_id == "shop"
    with pytest.raises(ProgramFileError) as caught:
        load_program(tmp_path / "missing.yaml")
    assert caught.value.line == 1
    assert str(caught.value).startswith(f"{tmp_path / 'missing.yaml'}:1: ")
    assert caught.value.exit_code == 2


def test_the_example_snippets_in_the_docs_load() -> None:
    docs = Path(__file__).parents[3] / "docs" / "program-config.md"
    blocks = docs.read_text().split("```yaml\n")[1:]
    complete = [block.split("```")[0] for block in blocks if block.startswith("program:")]
    assert complete, "docs/program-config.md shows at least one complete program"
    for block in complete:
        parse_program(textwrap.dedent(block), "docs")
