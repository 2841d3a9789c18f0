"""``loyalty-cdp keys``: the key alone on stdout, clear errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

from loyalty_cdp.testing import run_cli


def test_keys_create_prints_only_the_key(tmp_path: Path) -> None:
    result = run_cli("keys", "create", "--scopes", "ingest,read", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("lcdp_")
    listing = run_cli("keys", "list", "--data-dir", str(tmp_path))
    assert "ingest,read" in listing.stdout
    assert result.stdout.strip() not in listing.stdout


def test_bad_scope_is_a_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    result = run_cli("keys", "create", "--scopes", "ingest,root", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unknown scope(s) root" in result.stderr
    assert "Traceback" not in result.stderr


def test_revoking_an_unknown_key_is_exit_code_2(tmp_path: Path) -> None:
    result = run_cli("keys", "revoke", "abc", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "no API key" in result.stderr
