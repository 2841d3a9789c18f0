"""The scoring job: read the orders as of a date, score every member, store the scores, raise lapse alerts.

It only reads the server's files (the event log and, read-only, the profile store's identity
table and consent) and writes its own (``scores.db``, ``models/``), so it runs beside a live server. The
one exception is the ``Lapse Risk Detected`` events, which it appends through the event log's
ordinary, deduplicating ``append``. In this order:

1. read every ``Order Completed`` event with a timestamp at or before ``as_of`` and attribute it
   to its member through the identity table (a ``userId`` the processor has not linked yet is
   its own member, as the identity graph would make it; an unknown ``anonymousId`` is skipped),
   and the members who refused profiling and automated decision-making (their consent);
2. fit and score (:func:`loyalty_cdp.core.predictions.run.score_history`);
3. save the model artefact ``models/<version>.json``;
4. append a ``Lapse Risk Detected`` event for every member whose lapse risk reached the
   threshold since the previous run (none on the very first run, which sets the baseline);
5. replace the stored scores in one transaction.

Events go before scores: if the job dies between 4 and 5, the rerun finds the same crossings
and appends the same messageIds, which the log drops as duplicates; the other order could lose
an alert. A run as of a date before the live scores' (a back-test) writes to
``backtests/<date>/`` under the data directory instead and raises no alert, so the live scores
only move forward in time.
"""

from __future__ import annotations

import gc
import sqlite3
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from loyalty_cdp.adapters.eventlog.base import EventLog
from loyalty_cdp.adapters.scorestore import RunRecord, ScoreRow, ScoreStore
from loyalty_cdp.bootstrap import open_event_log
from loyalty_cdp.core.consent import PROFILING, consent_from_builtins
from loyalty_cdp.core.events import Event, format_time, normalise
from loyalty_cdp.core.identifiers import ANONYMOUS_ID, USER_ID
from loyalty_cdp.core.identity import member_id_for_user
from loyalty_cdp.core.predictions.alerts import lapse_risk_call
from loyalty_cdp.core.predictions.explain import lapse_reasons
from loyalty_cdp.core.predictions.history import HistoryBuilder, PurchaseHistory
from loyalty_cdp.core.predictions.lapse import upward_crossings
from loyalty_cdp.core.predictions.run import ScoringRun, score_history
from loyalty_cdp.core.predictions.scoring import ScoringConfig
from loyalty_cdp.errors import StorageUnavailable
from loyalty_cdp.settings import Settings

READ_BATCH = 10_000
APPEND_BATCH = 500
ORDER_EVENT = "Order Completed"

_decode_identities = msgspec.msgpack.Decoder(dict[str, list[str]]).decode


class _OrderBody(msgspec.Struct):
    properties: dict[str, Any] = msgspec.field(default_factory=dict)


_decode_order = msgspec.json.Decoder(_OrderBody).decode


class _ConsentOnly(msgspec.Struct):
    consent: dict[str, Any] = msgspec.field(default_factory=dict)


_decode_consent = msgspec.msgpack.Decoder(_ConsentOnly).decode


@dataclass(frozen=True)
class Identities:
    """Who owns each user id and anonymous id, and each member's ids to address events to."""

    owner: dict[tuple[str, str], str]
    user_id: dict[str, str]
    anonymous_id: dict[str, str]


@dataclass(frozen=True)
class ScoringReport:
    model_version: str
    as_of_ms: int
    members: int
    scored_for_targeting: int
    alerts_appended: int
    backtest: bool
    store_dir: Path
    unattributed_orders: int
    seconds: float


@contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: a run builds millions of small acyclic dicts and lists,
    which it would otherwise traverse again and again (a fifth of the run at 300,000 members)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_identities(profiles_db: Path) -> Identities:
    """The processor's identity table, opened read-only; empty when the server never ran."""
    owner: dict[tuple[str, str], str] = {}
    user_ids: dict[str, str] = {}
    anonymous_ids: dict[str, str] = {}
    if not profiles_db.exists():
        return Identities(owner, user_ids, anonymous_ids)
    try:
        conn = sqlite3.connect(f"{profiles_db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            rows = conn.execute("SELECT member_id, identities FROM members").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"profile store {profiles_db}: {exc}") from exc
    for member_id, blob in rows:
        identities = _decode_identities(blob)
        for kind in (USER_ID, ANONYMOUS_ID):
            for value in identities.get(kind, ()):
                owner[(kind, value)] = member_id
        if identities.get(USER_ID):
            user_ids[member_id] = identities[USER_ID][0]
        if identities.get(ANONYMOUS_ID):
            anonymous_ids[member_id] = identities[ANONYMOUS_ID][0]
    return Identities(owner, user_ids, anonymous_ids)


def read_admt_opt_outs(profiles_db: Path) -> set[str]:
    """Members whose latest recorded choice on profiling and automated decision-making is no.

    Only an explicit refusal counts (a ``Consent Updated`` or a consent banner saying no): the
    regime's default for members who recorded nothing is the decisioning path's to apply. Only
    profiles that mention the purpose at all are decoded.
    """
    if not profiles_db.exists():
        return set()
    try:
        conn = sqlite3.connect(f"{profiles_db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            rows = conn.execute("SELECT member_id, state FROM profiles WHERE instr(state, ?) > 0",
                                (PROFILING.encode(),)).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"profile store {profiles_db}: {exc}") from exc
    opted_out = set()
    for member_id, blob in rows:
        choice = consent_from_builtins(_decode_consent(blob).consent).purposes.get(PROFILING)
        if choice is not None and not choice.current.granted:
            opted_out.add(member_id)
    return opted_out


def read_history(event_log: EventLog, identities: Identities, as_of_ms: int) -> tuple[PurchaseHistory, int]:
    """The orders up to ``as_of_ms`` per member, and how many could not be attributed."""
    builder = HistoryBuilder()
    unattributed = 0
    owner = identities.owner
    after = 0
    while batch := event_log.read(after, READ_BATCH):
        after = batch[-1].offset
        for stored in batch:
            if stored.event != ORDER_EVENT or stored.type != "track" or stored.timestamp > as_of_ms:
                continue
            member_id = None
            if stored.user_id is not None:
                member_id = owner.get((USER_ID, stored.user_id)) or member_id_for_user(stored.user_id)
            elif stored.anonymous_id is not None:
                member_id = owner.get((ANONYMOUS_ID, stored.anonymous_id))
            if member_id is None:
                unattributed += 1
                continue
            builder.add_order(member_id, stored.timestamp, _decode_order(stored.body).properties)
    return builder.build(), unattributed


def _alerts(run: ScoringRun, previous: dict[str, float], identities: Identities, threshold: float,
            now_ms: int) -> list[Event]:
    before = np.array([previous.get(member, np.nan) for member in run.member_ids.tolist()], dtype=np.float64)
    crossed = upward_crossings(before, np.nan_to_num(run.lapse_risk, nan=-1.0), threshold)
    events = []
    for index in np.flatnonzero(crossed).tolist():
        member_id = str(run.member_ids[index])
        user_id = identities.user_id.get(member_id)
        anonymous_id = None if user_id else identities.anonymous_id.get(member_id)
        if user_id is None and anonymous_id is None:
            user_id = member_id  # a user id the processor has not folded yet is its member id
        call = lapse_risk_call(
            member_id=member_id, user_id=user_id, anonymous_id=anonymous_id,
            lapse_risk=float(run.lapse_risk[index]), p_alive=float(run.p_alive[index]), threshold=threshold,
            model_version=run.models.version, as_of_ms=run.as_of_ms, reasons=lapse_reasons(run.explanations[index]),
        )
        events.append(normalise(call, call_type="track", received_at=now_ms, default_message_id=call["messageId"]))
    return events


def run_scoring(
    settings: Settings,
    *,
    as_of_ms: int,
    now_ms: int,
    config: ScoringConfig | None = None,
    opted_out: Collection[str] | None = None,
    seed: int = 0,
) -> ScoringReport:
    """Score every member as of ``as_of_ms`` (see the module docstring for the steps and their order).

    ``opted_out`` (member ids) defaults to the members who refused profiling and automated
    decision-making in their recorded consent (:func:`read_admt_opt_outs`).
    """
    started = time.perf_counter()
    config = config or ScoringConfig()
    live = ScoreStore(settings.data_dir)
    last = live.last_run()
    backtest = last is not None and as_of_ms < last.as_of
    store = live
    if backtest:
        live.close()
        store = ScoreStore(settings.data_dir / "backtests" / format_time(as_of_ms)[:10])
    event_log = open_event_log(settings)
    try:
        identities = read_identities(settings.data_dir / "profiles.db")
        if opted_out is None:
            opted_out = read_admt_opt_outs(settings.data_dir / "profiles.db")
        history, unattributed = read_history(event_log, identities, as_of_ms)
        with without_cyclic_gc():
            run = score_history(history, as_of_ms, config, opted_out=opted_out, seed=seed)
            store.save_model(run.models.version, run.artefact())
            appended = 0
            if not backtest and last is not None:
                alerts = _alerts(run, store.lapse_risks(), identities, config.lapse_threshold, now_ms)
                for start in range(0, len(alerts), APPEND_BATCH):
                    appended += event_log.append(alerts[start:start + APPEND_BATCH]).appended
            record = RunRecord(run.models.version, as_of_ms, now_ms, int(run.member_ids.size), run.models.metrics)
            store.replace_all((ScoreRow(*fields) for fields in run.records()), record)
    finally:
        event_log.close()
        store.close()
    return ScoringReport(
        model_version=run.models.version, as_of_ms=as_of_ms, members=int(run.member_ids.size),
        scored_for_targeting=int(run.targeting.sum()), alerts_appended=appended, backtest=backtest,
        store_dir=store.path.parent, unattributed_orders=unattributed, seconds=time.perf_counter() - started,
    )
