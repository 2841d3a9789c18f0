"""Fixtures shared by every tier: real services, addressed by environment variables with defaults.

Outside CI a test whose service is unreachable is skipped with the reason; under ``CI=true``
it fails instead, so a green CI run always means the test really ran.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_DSN = os.environ.get(
    "LOYALTY_CDP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("LOYALTY_CDP_TEST_NATS_URL", "nats://127.0.0.1:4222")


def unavailable(service: str, reason: str) -> None:
    """Skip (or, under CI, fail) a test whose real service is unreachable."""
    message = f"{service} unreachable: {reason}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (CI=true: services must be up)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server_dsn() -> str:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:
        unavailable("PostgreSQL", str(exc).strip())
    return POSTGRES_DSN


@pytest.fixture()
def postgres_dsn(postgres_server_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"lcdp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(postgres_server_dsn)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(postgres_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
