"""One frozen settings object for the whole process, read from arguments and the environment once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from loyalty_cdp.errors import InvalidInput

Storage = Literal["sqlite", "postgres"]


def _mask_dsn(dsn: str | None) -> str | None:
    if dsn is None or "@" not in dsn:
        return dsn
    scheme, _, rest = dsn.partition("://")
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


@dataclass(frozen=True)
class Settings:
    """Everything a process needs to build its components (see :mod:`loyalty_cdp.bootstrap`).

    Environment variables (all optional): ``LOYALTY_CDP_DATA_DIR``, ``LOYALTY_CDP_STORAGE``
    (``sqlite`` or ``postgres``), ``LOYALTY_CDP_POSTGRES_DSN``, ``LOYALTY_CDP_HOST``,
    ``LOYALTY_CDP_PORT``, ``LOYALTY_CDP_INGEST_QUEUE_EVENTS``, ``LOYALTY_CDP_INGEST_WRITERS``,
    ``LOYALTY_CDP_KEY_RATE_LIMIT``.
    The services read a few of their own (``LOYALTY_CDP_SCORE_EVERY_S``,
    ``LOYALTY_CDP_AUDIENCE_EVERY_S``, ...): docs/operations.md lists them all.
    """

    data_dir: Path = Path("./data")
    storage: Storage = "sqlite"
    postgres_dsn: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    program: Path | None = None
    # Events waiting for the durable append; beyond this, ingest answers 429.
    ingest_queue_events: int = 200_000
    # Event log writer processes (embedded SQLite log): they normalise requests side by side.
    ingest_writers: int = 2
    # Requests a second each API key may make on average (bursts up to twice that); 0 = no limit.
    key_rate_limit: int = 10_000

    def __post_init__(self) -> None:
        if self.storage not in ("sqlite", "postgres"):
            raise InvalidInput("storage", f"must be sqlite or postgres, got {self.storage!r}")
        if self.storage == "postgres" and not self.postgres_dsn:
            raise InvalidInput(
                "LOYALTY_CDP_POSTGRES_DSN", "is required when LOYALTY_CDP_STORAGE=postgres"
            )
        if not 0 < self.port < 65536:
            raise InvalidInput("port", f"must be between 1 and 65535, got {self.port}")
        if self.ingest_queue_events < 1:
            raise InvalidInput("ingest_queue_events", "must be positive")
        if not 1 <= self.ingest_writers <= 64:
            raise InvalidInput("LOYALTY_CDP_INGEST_WRITERS", f"must be between 1 and 64, got {self.ingest_writers}")
        if self.key_rate_limit < 0:
            raise InvalidInput("LOYALTY_CDP_KEY_RATE_LIMIT", "must be 0 (no limit) or a positive rate")

    @property
    def masked_dsn(self) -> str | None:
        return _mask_dsn(self.postgres_dsn)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``LOYALTY_CDP_*`` variables; explicit ``overrides`` (not None) win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if "LOYALTY_CDP_DATA_DIR" in env:
            values["data_dir"] = Path(env["LOYALTY_CDP_DATA_DIR"])
        if "LOYALTY_CDP_STORAGE" in env:
            values["storage"] = env["LOYALTY_CDP_STORAGE"]
        if "LOYALTY_CDP_POSTGRES_DSN" in env:
            values["postgres_dsn"] = env["LOYALTY_CDP_POSTGRES_DSN"]
        if "LOYALTY_CDP_HOST" in env:
            values["host"] = env["LOYALTY_CDP_HOST"]
        for key, name in (("port", "LOYALTY_CDP_PORT"), ("ingest_queue_events", "LOYALTY_CDP_INGEST_QUEUE_EVENTS"),
                          ("ingest_writers", "LOYALTY_CDP_INGEST_WRITERS"),
                          ("key_rate_limit", "LOYALTY_CDP_KEY_RATE_LIMIT")):
            if name in env:
                try:
                    values[key] = int(env[name])
                except ValueError:
                    raise InvalidInput(name, f"must be an integer, got {env[name]!r}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data_dir" in values:
            values["data_dir"] = Path(str(values["data_dir"]))
        return cls(**values)  # type: ignore[arg-type]
