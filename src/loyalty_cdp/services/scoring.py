"""The scoring job (read the orders as of a date, score every member, store the scores, raise lapse
alerts), its schedule inside the server, and the incremental lapse refresh after a purchase.

It only reads the server's files (the event log and, read-only, the profile store's identity
table and consent) and writes its own (``scores.db``, ``models/``), so it runs beside a live server. The
one exception is the ``Lapse Risk Detected`` events, which it appends through the event log's
ordinary, deduplicating ``append``. In this order:

1. read every ``Order Completed`` event with a timestamp at or before ``as_of`` (and the
   ``Product Added to Wishlist`` and reward ``Points Redeemed`` events the offer propensities
   learn from) and attribute it to its member through the identity table (a ``userId`` the
   processor has not linked yet is its own member, as the identity graph would make it; an
   unknown ``anonymousId`` is skipped), and the members who refused profiling and automated
   decision-making (their consent);
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

:class:`ScoringScheduler` runs the same :func:`run_scoring` in the server every
``LOYALTY_CDP_SCORE_EVERY_S`` seconds, in a child process so that a long run never holds the
server's interpreter. :class:`LapseRefresher` updates one member's P(alive), lapse risk and
expected purchases after a purchase, from the stored run's parameters, between runs.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from loyalty_cdp.adapters.eventlog.base import EventLog
from loyalty_cdp.adapters.scorestore import RunRecord, ScoreRow, ScoreStore, StoredEntry
from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT
from loyalty_cdp.core.consent import PROFILING, consent_from_builtins
from loyalty_cdp.core.decisioning.config import DecisioningBook
from loyalty_cdp.core.decisioning.triggers import ConditionTrigger, ReplenishmentTrigger
from loyalty_cdp.core.events import Event, format_time, normalise
from loyalty_cdp.core.identifiers import ANONYMOUS_ID, USER_ID
from loyalty_cdp.core.identity import member_id_for_user
from loyalty_cdp.core.loyalty import ProgramBook
from loyalty_cdp.core.predictions.alerts import lapse_risk_call
from loyalty_cdp.core.predictions.explain import lapse_reasons
from loyalty_cdp.core.predictions.history import HistoryBuilder, PurchaseHistory
from loyalty_cdp.core.predictions.lapse import DEFAULT_THRESHOLD, upward_crossings
from loyalty_cdp.core.predictions.refresh import LapseModel, refresh_lapse
from loyalty_cdp.core.predictions.run import ScoringRun, score_history
from loyalty_cdp.core.predictions.scoring import ScoringConfig
from loyalty_cdp.core.profile import DAY_MS, Profile
from loyalty_cdp.errors import InvalidInput, LoyaltyCdpError, NotFound, StorageUnavailable
from loyalty_cdp.settings import Settings

log = logging.getLogger(__name__)

READ_BATCH = 10_000
APPEND_BATCH = 500
ORDER_EVENT = "Order Completed"
WISHLIST_EVENT = "Product Added to Wishlist"
REDEEMED_EVENT = "Points Redeemed"  # the loyalty engine's; points paid at checkout come with their order
READ_EVENTS = frozenset({ORDER_EVENT, WISHLIST_EVENT, REDEEMED_EVENT})
SCORE_EVERY_VARIABLE = "LOYALTY_CDP_SCORE_EVERY_S"
DEFAULT_SCORE_EVERY_S = 3600.0

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
            conn.execute(BUSY_TIMEOUT)
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
            conn.execute(BUSY_TIMEOUT)
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
    """The orders (with wishlist additions and reward redemptions) up to ``as_of_ms`` per member, and
    how many orders could not be attributed."""
    builder = HistoryBuilder()
    unattributed = 0
    owner = identities.owner
    after = 0
    while batch := event_log.read(after, READ_BATCH):
        after = batch[-1].offset
        for stored in batch:
            if stored.event not in READ_EVENTS or stored.type != "track" or stored.timestamp > as_of_ms:
                continue
            member_id = None
            if stored.user_id is not None:
                member_id = owner.get((USER_ID, stored.user_id)) or member_id_for_user(stored.user_id)
            elif stored.anonymous_id is not None:
                member_id = owner.get((ANONYMOUS_ID, stored.anonymous_id))
            if member_id is None:
                unattributed += stored.event == ORDER_EVENT
                continue
            properties = _decode_order(stored.body).properties
            if stored.event == ORDER_EVENT:
                builder.add_order(member_id, stored.timestamp, properties)
            elif stored.event == WISHLIST_EVENT:
                builder.add_wishlist(member_id, stored.timestamp, properties)
            elif properties.get("reason") != "order_payment":
                builder.add_redemption(member_id, stored.timestamp)
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
    event_log: EventLog | None = None,
) -> ScoringReport:
    """Score every member as of ``as_of_ms`` (see the module docstring for the steps and their order).

    ``opted_out`` (member ids) defaults to the members who refused profiling and automated
    decision-making in their recorded consent (:func:`read_admt_opt_outs`). ``event_log``
    defaults to one opened (and closed) from ``settings``; one passed in is left open.
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
    own_log = event_log is None
    if event_log is None:
        from loyalty_cdp.bootstrap import open_event_log  # the composition root imports this module

        try:
            event_log = open_event_log(settings)
        except BaseException:
            store.close()
            raise
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
        if own_log:
            event_log.close()
        store.close()
    return ScoringReport(
        model_version=run.models.version, as_of_ms=as_of_ms, members=int(run.member_ids.size),
        scored_for_targeting=int(run.targeting.sum()), alerts_appended=appended, backtest=backtest,
        store_dir=store.path.parent, unattributed_orders=unattributed, seconds=time.perf_counter() - started,
    )


# -- the schedule ---------------------------------------------------------------------------------


def score_every_s(environ: Mapping[str, str] | None = None) -> float:
    """``LOYALTY_CDP_SCORE_EVERY_S``: seconds between scheduled runs (default 3600; 0 disables)."""
    text = (os.environ if environ is None else environ).get(SCORE_EVERY_VARIABLE, "").strip()
    if not text:
        return DEFAULT_SCORE_EVERY_S
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(SCORE_EVERY_VARIABLE, f"{text[:40]!r} is not a number of seconds") from None
    if not (value == 0 or 1 <= value <= 7 * 86_400):
        raise InvalidInput(SCORE_EVERY_VARIABLE, "must be 0 (no scheduled scoring) or 1 to 604800 seconds")
    return value


def scoring_config_for(program: ProgramBook | DecisioningBook | None,
                       base: ScoringConfig | None = None) -> ScoringConfig:
    """The scoring configuration a program implies: the lapse threshold of its trigger on
    ``scores.lapse_risk >= x`` (the first such ``condition`` trigger) and the largest ``lead_days``
    of its ``replenishment_due`` triggers; the defaults where it has neither."""
    config = base or ScoringConfig()
    if program is None:
        return config
    book = DecisioningBook.from_book(program) if isinstance(program, ProgramBook) else program
    threshold, lead_days = None, []
    for rule in book.latest.triggers:
        trigger = rule.config
        if isinstance(trigger, ReplenishmentTrigger):
            lead_days.append(trigger.lead_days)
        elif (isinstance(trigger, ConditionTrigger) and threshold is None
              and trigger.condition.get("field") == "scores.lapse_risk"
              and isinstance(trigger.condition.get("gte"), int | float) and 0 < trigger.condition["gte"] < 1):
            threshold = float(trigger.condition["gte"])
    if threshold is not None:
        config = replace(config, lapse_threshold=threshold)
    if lead_days:
        config = replace(config, replenishment=replace(config.replenishment, lead_days=max(lead_days)))
    return config


def _child_run(settings: Settings, config: ScoringConfig, now_ms: int, pipe: Connection) -> None:
    """The scheduled run, in a child process: the report (or the error) goes back through ``pipe``."""
    # The signals a terminal or a service manager sends the server's whole process group are the
    # server's to handle: it stops this run itself (:meth:`ScoringScheduler.stop`).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        report = run_scoring(settings, as_of_ms=now_ms, now_ms=now_ms, config=config)
        pipe.send(("ok", {**asdict(report), "store_dir": str(report.store_dir)}))
    except LoyaltyCdpError as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # reported to the parent, which logs it and retries next interval
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


@dataclass
class SchedulerStatus:
    """What /metrics and /healthz show of the schedule; times are epoch seconds, None before the first."""

    interval_s: float
    running: bool = False
    runs: int = 0
    failures: int = 0
    skipped: int = 0
    last_started_at: float | None = None
    last_finished_at: float | None = None
    last_duration_s: float | None = None
    last_success_at: float | None = None
    last_error: str | None = None
    last_members: int | None = None
    last_alerts: int | None = None
    last_model_version: str | None = None


RETRY_AFTER_FAILURE_S = 60.0
KILLED_BY_SIGNAL = "the scoring process was stopped by"


class ScoringScheduler:
    """Runs :func:`run_scoring` as of now every ``interval_s`` seconds in a background thread.

    Each run is a child process (``spawn``), so its minutes of NumPy and dict building never hold
    the server's interpreter, and its memory goes back when it ends; at most one runs at a time
    (the thread waits for it). A failing run is logged and counted, and tried again after
    ``RETRY_AFTER_FAILURE_S`` (or the interval, if shorter). A run is skipped when nothing was
    appended to the event log since the previous successful one and the as-of day is the same
    (every score is computed per day, so it would be the same run). :meth:`stop` ends the wait at
    once and terminates a run in progress, which is safe: the score store's replacement is one
    transaction, the artefact is renamed into place, and alerts are deduplicated by messageId when
    the next run appends them again.
    ``interval_s`` 0 disables the schedule (:meth:`start` does nothing).
    """

    def __init__(self, settings: Settings, event_log: EventLog, scores: ScoreStore,
                 program_book: ProgramBook | DecisioningBook | None, interval_s: float,
                 *, config: ScoringConfig | None = None, first_delay_s: float | None = None) -> None:
        if not (interval_s == 0 or interval_s > 0):
            raise InvalidInput("interval_s", "must be 0 (disabled) or a positive number of seconds")
        self.settings = settings
        self.event_log = event_log
        self.scores = scores
        self.config = scoring_config_for(program_book, config)
        self.interval_s = float(interval_s)
        self.first_delay_s = min(self.interval_s, 5.0) if first_delay_s is None else float(first_delay_s)
        self.retry_s = min(self.interval_s, RETRY_AFTER_FAILURE_S)  # a failed run is tried again sooner
        self._status = SchedulerStatus(self.interval_s)
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._child: multiprocessing.process.BaseProcess | None = None
        self._child_lock = threading.Lock()
        self._last_seen: tuple[int, int] | None = None  # (log offset, as-of day) of the last successful run

    def start(self) -> None:
        """Start the thread (the first run after ``first_delay_s``); nothing when the schedule is disabled."""
        if self.interval_s == 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="scoring-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop waiting, terminate a run in progress and join the thread."""
        self._stop.set()
        with self._child_lock:
            child = self._child
        if child is not None and child.is_alive():
            child.kill()  # it ignores SIGTERM (see _child_run)
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def status(self) -> dict[str, Any]:
        with self._status_lock:
            return asdict(self._status)

    def run_once(self) -> bool:
        """One run now, in the calling thread (the loop calls it); True if it succeeded or was skipped."""
        now_ms = int(time.time() * 1000)
        offset, day = self.event_log.last_offset(), now_ms // DAY_MS
        if self._last_seen == (offset, day):
            with self._status_lock:
                self._status.skipped += 1
            return True
        started = time.time()
        with self._status_lock:
            self._status.running = True
            self._status.last_started_at = started
        outcome, detail = self._run_child(now_ms)
        finished = time.time()
        with self._status_lock:
            status = self._status
            status.running = False
            status.runs += 1
            status.last_finished_at = finished
            status.last_duration_s = finished - started
            if outcome == "ok":
                status.last_success_at = finished
                status.last_error = None
                status.last_members = int(detail["members"])
                status.last_alerts = int(detail["alerts_appended"])
                status.last_model_version = str(detail["model_version"])
            else:
                status.failures += 1
                status.last_error = str(detail)
        if outcome == "ok":
            self._last_seen = (offset, day)
            log.info("scheduled scoring: %s members, model %s, %s alerts, %.1f s", detail["members"],
                     detail["model_version"], detail["alerts_appended"], finished - started)
            return True
        # Too little history to fit (a new program, a demo still loading) is expected, not an error;
        # nor is a run killed by a signal sent to the whole process group (the server is stopping).
        expected = str(detail).startswith((InvalidInput.__name__, KILLED_BY_SIGNAL))
        level = logging.WARNING if expected else logging.ERROR
        log.log(level, "scheduled scoring failed (retried in %.0f s): %s", self.retry_s, detail)
        return False

    def _run_child(self, now_ms: int) -> tuple[str, Any]:
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=_child_run, args=(self.settings, self.config, now_ms, sender),
                                name="loyalty-cdp-score", daemon=True)
        with self._child_lock:
            if self._stop.is_set():
                return "error", "stopped before the run started"
            child.start()
            self._child = child
        sender.close()
        try:
            while not receiver.poll(0.2):
                if not child.is_alive():
                    break
            message = receiver.recv() if receiver.poll(0) else None
        except (EOFError, OSError):
            message = None
        finally:
            child.join()
            receiver.close()
            with self._child_lock:
                self._child = None
        if message is None:
            if child.exitcode is not None and child.exitcode < 0:
                return "error", f"{KILLED_BY_SIGNAL} {signal.Signals(-child.exitcode).name}"
            return "error", f"the scoring process ended with exit code {child.exitcode} and no report"
        outcome, detail = message
        return str(outcome), detail

    def _loop(self) -> None:
        if self._stop.wait(self.first_delay_s):
            return
        while True:
            try:
                succeeded = self.run_once()
            except Exception:  # the schedule must survive anything a run does; it is retried soon
                log.exception("scheduled scoring failed (retried in %.0f s)", self.retry_s)
                with self._status_lock:
                    self._status.running = False
                    self._status.failures += 1
                succeeded = False
            if self._stop.wait(self.interval_s if succeeded else self.retry_s):
                return


# -- the incremental lapse refresh ------------------------------------------------------------------


def purchase_summary(entry: StoredEntry, purchases: Iterable[int], as_of_ms: int,
                     time_unit_days: float) -> tuple[float, float, float] | None:
    """(frequency, recency, T) in model units as of ``as_of_ms``'s day: the stored row's, advanced by the
    purchase days after the row's as-of time (``purchases``: order timestamps, e.g. the profile's
    ``activity.purchases.recent``). None when the row lacks the fields (an older run's)."""
    scores = entry.scores
    try:
        orders = int(scores["orders"])
        since_last = round(float(scores["days_since_last_purchase"]))
        since_first = round(float(scores["days_since_first_purchase"]))
    except (KeyError, TypeError, ValueError):
        return None
    row_day = entry.as_of // DAY_MS
    first_day, last_day = row_day - since_first, row_day - since_last
    today = as_of_ms // DAY_MS
    new_days = {at // DAY_MS for at in purchases if entry.as_of < at <= as_of_ms} - {last_day}
    new_days = {day for day in new_days if day > first_day}
    frequency = orders - 1 + len(new_days)
    last_day = max(last_day, *new_days) if new_days else last_day
    if today < last_day:
        return None
    return float(frequency), (last_day - first_day) / time_unit_days, (today - first_day) / time_unit_days


class LapseRefresher:
    """Refreshes a scored member's P(alive), lapse risk, expected purchases and CLV after a purchase.

    ``refresh(member_id, profile, as_of)`` reads the member's stored row (one indexed read), the
    run's parameters (the artefact, cached per model version), advances the member's (frequency,
    recency, T) by the purchase days in ``profile.activity.purchases.recent`` after the row's
    as-of time, recomputes with :func:`~loyalty_cdp.core.predictions.refresh.refresh_lapse` and
    writes the row back if no run replaced it meanwhile. It returns the ``Lapse Risk Detected``
    call to append when the lapse risk went from below ``threshold`` to at or above it, with the
    messageId the scoring job uses for the same member and day, so whichever appends second is
    dropped by the log. Members with no row, opted out of automated decision-making, or whose run's
    artefact is gone get no refresh (and no call).
    """

    MODELS_KEPT = 4

    def __init__(self, scores: ScoreStore, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0 < threshold < 1:
            raise InvalidInput("threshold", "must be between 0 and 1")
        self.scores = scores
        self.threshold = float(threshold)
        self._models: dict[str, LapseModel | None] = {}
        self._lock = threading.Lock()
        self.refreshed = 0
        self.skipped = 0

    def _model(self, version: str) -> LapseModel | None:
        with self._lock:
            if version in self._models:
                return self._models[version]
        try:
            model: LapseModel | None = LapseModel.from_artefact(self.scores.load_model(version))
        except (NotFound, InvalidInput) as exc:
            log.warning("no incremental lapse refresh with model %s: %s", version, exc)
            model = None
        with self._lock:
            while len(self._models) >= self.MODELS_KEPT:
                self._models.pop(next(iter(self._models)))
            self._models[version] = model
        return model

    def refresh(self, member_id: str, profile: Profile, as_of: int) -> list[dict[str, Any]]:
        """Update the member's stored scores as of ``as_of`` (epoch ms); the track calls to append."""
        entry = self.scores.entry(member_id)
        if entry is None or not entry.targeting or entry.lapse_risk is None or as_of < entry.as_of:
            self.skipped += 1
            return []
        model = self._model(entry.model_version)
        if model is None:
            self.skipped += 1
            return []
        summary = purchase_summary(entry, profile.activity.purchases.recent, as_of, model.time_unit_days)
        if summary is None:
            self.skipped += 1
            return []
        scores, explanation = refresh_lapse(entry.scores, entry.explanation, model, *summary, as_of)
        risk = float(scores["lapse_risk"])
        if not self.scores.update_member(entry, risk, scores, explanation, as_of):
            self.skipped += 1
            return []
        self.refreshed += 1
        if not (entry.lapse_risk < self.threshold <= risk):
            return []
        user_id, anonymous_id = profile.user_id, None
        if user_id is None:
            anonymous = profile.identities.get(ANONYMOUS_ID)
            anonymous_id = anonymous[0] if anonymous else None
            if anonymous_id is None:
                user_id = member_id  # as the scoring job addresses a member it knows by id only
        return [lapse_risk_call(
            member_id=member_id, user_id=user_id, anonymous_id=anonymous_id, lapse_risk=risk,
            p_alive=float(scores["p_alive"]), threshold=self.threshold, model_version=entry.model_version,
            as_of_ms=as_of, reasons=lapse_reasons(explanation),
        )]
