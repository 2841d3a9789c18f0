"""The composition root: builds every component from one :class:`Settings`, and nothing else does."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loyalty_cdp.adapters.audit import AUDIT_DB, AuditLog
from loyalty_cdp.adapters.keystore import KeyStore, RateLimiter
from loyalty_cdp.settings import Settings

# The server's components import most of the package (scikit-learn, Jinja2, the destinations):
# they are imported where they are built, so that commands needing only a store start at once.
if TYPE_CHECKING:
    from loyalty_cdp.adapters.decisionstore import DecisionStore
    from loyalty_cdp.adapters.eventlog.base import AppendResult, EventLog
    from loyalty_cdp.adapters.privacy_requests import PrivacyRequestStore
    from loyalty_cdp.adapters.profilestore.base import ProfileStore
    from loyalty_cdp.adapters.scorestore import ScoreStore
    from loyalty_cdp.adapters.suppression import SuppressionList
    from loyalty_cdp.api.metrics import Metrics
    from loyalty_cdp.core.decisioning import DecisioningBook
    from loyalty_cdp.core.loyalty import ProgramBook
    from loyalty_cdp.core.segments import LoyaltyReader
    from loyalty_cdp.services.activation import Activation
    from loyalty_cdp.services.appender import GroupCommitAppender
    from loyalty_cdp.services.decisioning_stage import DecisioningStage
    from loyalty_cdp.services.member_answers import MemberAnswers
    from loyalty_cdp.services.processor import Processor
    from loyalty_cdp.services.scoring import ScoringScheduler
    from loyalty_cdp.services.segments import SegmentRegistry


def open_event_log(settings: Settings) -> EventLog:
    if settings.storage == "postgres":
        from loyalty_cdp.adapters.eventlog.postgres import PostgresEventLog

        assert settings.postgres_dsn is not None  # Settings validated it
        return PostgresEventLog(settings.postgres_dsn)
    from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteEventLog(settings.data_dir / "events.db")


def open_profile_store(settings: Settings) -> ProfileStore:
    if settings.storage == "postgres":
        from loyalty_cdp.adapters.profilestore.postgres import PostgresProfileStore

        assert settings.postgres_dsn is not None  # Settings validated it
        return PostgresProfileStore(settings.postgres_dsn)
    from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore

    return SqliteProfileStore(settings.data_dir / "profiles.db")


def open_program(settings: Settings) -> tuple[ProgramBook, DecisioningBook]:
    """The program (``--config`` / settings.program, or the example retail program): its loyalty
    versions and its segments, offers and triggers, every section validated, errors naming
    file, line and field."""
    from loyalty_cdp.adapters.program_yaml import load_program_source
    from loyalty_cdp.core.decisioning import DecisioningBook
    from loyalty_cdp.core.loyalty.program import VersionError
    from loyalty_cdp.programs import retail_program_path

    source = load_program_source(settings.program or retail_program_path())
    try:
        decisioning = DecisioningBook.from_book(source.book)
    except VersionError as exc:
        raise source.error(exc.document, exc.field, exc.reason) from None
    return source.book, decisioning


def open_processor(settings: Settings, event_log: EventLog, batch_size: int = 5_000,
                   suppression: SuppressionList | None = None,
                   program: tuple[ProgramBook, DecisioningBook] | None = None,
                   decisioning: DecisioningStage | None = None) -> Processor:
    """The processor with the loyalty program; with ``decisioning``, segments, triggers and decisions too."""
    from loyalty_cdp.core.loyalty import LoyaltyEngine
    from loyalty_cdp.services.processor import Processor

    book = (program or open_program(settings))[0]
    return Processor(event_log, open_profile_store(settings), batch_size=batch_size, loyalty=LoyaltyEngine(book),
                     suppression=suppression or open_suppression(settings), decisioning=decisioning)


def open_decision_store(settings: Settings) -> DecisionStore:
    """Decisions and segment memberships, in the outbox's file (``<data-dir>/outbox.db``)."""
    from loyalty_cdp.adapters.decisionstore import DecisionStore
    from loyalty_cdp.adapters.outbox import OUTBOX_FILE, Outbox

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return DecisionStore(Outbox(settings.data_dir / OUTBOX_FILE))


def open_decisioning_stage(settings: Settings, program: tuple[ProgramBook, DecisioningBook],
                           store: DecisionStore, scores: ScoreStore, segments: SegmentRegistry,
                           activation: Activation | None = None) -> DecisioningStage:
    """Segments (the program's and the API's), triggers and decisions, and the lapse-risk refresh
    after each purchase; with ``activation``, send decisions become outbound messages."""
    from loyalty_cdp.core.segments import LoyaltyReader
    from loyalty_cdp.services.decisioning_stage import DecisioningStage
    from loyalty_cdp.services.scoring import LapseRefresher, scoring_config_for

    refresher = LapseRefresher(scores, scoring_config_for(program[1]).lapse_threshold)
    return DecisioningStage(program[1], LoyaltyReader(program[0]), store, lambda: int(time.time() * 1000),
                            scores=scores, segments=segments.current, refresh=refresher.refresh,
                            deliver=activation.messages_for if activation is not None else None,
                            staged=activation.notify if activation is not None else None)


def open_suppression(settings: Settings) -> SuppressionList:
    from loyalty_cdp.adapters.suppression import SuppressionList

    return SuppressionList(settings.data_dir)


def open_audit_log(settings: Settings) -> AuditLog:
    return AuditLog(settings.data_dir / AUDIT_DB)


def open_key_store(settings: Settings) -> KeyStore:
    return KeyStore(settings.data_dir / "keys.db")


@dataclass
class Components:
    """What the HTTP app and the services share; built by :func:`build`, closed by :meth:`close`."""

    settings: Settings
    event_log: EventLog
    keys: KeyStore
    metrics: Metrics
    appender: GroupCommitAppender
    processor: Processor
    scores: ScoreStore
    suppression: SuppressionList
    privacy_requests: PrivacyRequestStore
    audit: AuditLog
    decisioning: DecisioningBook
    loyalty_reader: LoyaltyReader
    decisions: DecisionStore
    activation: Activation
    segments: SegmentRegistry
    scheduler: ScoringScheduler
    answers: MemberAnswers

    async def start(self) -> None:
        self.appender.start()
        self.processor.start()
        await self.activation.start()
        self.scheduler.start()

    async def close(self) -> None:
        await self.appender.close()  # the ingest queue drains into the log
        self.scheduler.stop()
        self.processor.stop()  # between batches: nothing uses the decision store after this
        # While its lanes stop, activation hands their last status events to the log (still open).
        await self.activation.close()  # closes the decision store and the outbox it shares
        self.processor.close()
        self.scores.close()
        self.suppression.close()
        self.privacy_requests.close()
        self.audit.close()
        self.keys.close()
        self.event_log.close()


def build(settings: Settings, metrics: Metrics) -> Components:
    """Open the stores and wire the services. Call inside the server's event loop."""
    from loyalty_cdp.adapters.privacy_requests import PrivacyRequestStore
    from loyalty_cdp.adapters.scorestore import ScoreStore
    from loyalty_cdp.core.segments import LoyaltyReader
    from loyalty_cdp.services.activation import Activation
    from loyalty_cdp.services.appender import GroupCommitAppender
    from loyalty_cdp.services.member_answers import MemberAnswers
    from loyalty_cdp.services.scoring import ScoringScheduler, score_every_s
    from loyalty_cdp.services.segments import SegmentRegistry

    event_log = open_event_log(settings)
    program = open_program(settings)
    suppression = open_suppression(settings)
    scores = ScoreStore(settings.data_dir)
    processor: Processor | None = None

    def append(calls: list[dict[str, Any]]) -> None:  # delivery status, email tracking, SMS keywords
        assert processor is not None, "activation appends only once the server runs"
        processor.emit(calls)

    activation = Activation(settings, settings.program, append, metrics)
    segments = SegmentRegistry(program[1], activation.decisions, program=program[0], scores=scores)
    stage = open_decisioning_stage(settings, program, activation.decisions, scores, segments, activation)
    processor = open_processor(settings, event_log, suppression=suppression, program=program, decisioning=stage)
    activation.attach_members(processor.view)

    def appended(result: AppendResult) -> None:
        metrics.record_append(result)
        processor.notify()

    appender = GroupCommitAppender(event_log, capacity=settings.ingest_queue_events, on_append=appended,
                                   data_dir=settings.data_dir, writers=settings.ingest_writers)
    metrics.watch(
        queue_depth=lambda: appender.queued_events,
        log_events=lambda: event_log.count(),
        log_bytes=lambda: event_log.size_bytes(),
        processor_lag=lambda: event_log.last_offset() - processor.offset,
        members=lambda: len(processor.view),
    )
    keys = open_key_store(settings)
    if settings.key_rate_limit:
        keys.limiter = RateLimiter(settings.key_rate_limit, 2 * settings.key_rate_limit)
    scheduler = ScoringScheduler(settings, event_log, scores, program[1], score_every_s())
    metrics.watch_scoring(scheduler.status)
    return Components(settings, event_log, keys, metrics, appender, processor, scores, suppression,
                      PrivacyRequestStore(settings.data_dir), open_audit_log(settings), program[1],
                      LoyaltyReader(program[0]), activation.decisions, activation, segments, scheduler,
                      MemberAnswers(processor, scores))
