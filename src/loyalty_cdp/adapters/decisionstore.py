"""The decision store: decisions, their outcomes and segment memberships, in the outbox's file.

Decisions live in ``<data-dir>/outbox.db`` beside the outbox tables, so that a decision and
the messages it sends commit in one SQLite transaction (see :mod:`loyalty_cdp.adapters.outbox`):
both are there after a crash or neither is. Decisions are inserted if absent by
``decision_id``; because the id is derived from the member and the trigger occurrence, a
replay or a retried batch finds the decision already stored and sends nothing twice.

Tables:

- ``decisions``: one row per decision, the whole record (msgpack) plus the columns the
  reports filter on (member, trigger, campaign, arm, action, time);
- ``decision_outcomes``: ``shown``, ``accepted``, ``dismissed``, ``redeemed`` per decision,
  the first report of each kept;
- ``segment_members``: who is in each segment now, and since when;
- ``segment_transitions``: every entry and exit (membership history, size over time);
- ``wishlist_index``: product -> members with it on their wishlist, for the price-drop
  trigger (a superset: the trigger checks the member's profile).

Readers (the HTTP API) use a connection of their own; WAL lets them read while the
processor writes.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import msgspec

from loyalty_cdp.adapters.outbox import Outbox, stage
from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT
from loyalty_cdp.core.decisioning import Decision, Send
from loyalty_cdp.core.messages import OutboundMessage, message_id_for
from loyalty_cdp.errors import InvalidInput, NotFound, StorageUnavailable

OUTCOMES = ("shown", "accepted", "dismissed", "redeemed")
Outcome = Literal["shown", "accepted", "dismissed", "redeemed"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS decisions (
        decision_id TEXT PRIMARY KEY,
        member_id   TEXT NOT NULL,
        user_id     TEXT,
        at          INTEGER NOT NULL,
        trigger_id  TEXT,
        campaign    TEXT,
        arm         TEXT,
        action      TEXT NOT NULL,
        channel     TEXT,
        offer_id    TEXT,
        stored_at   INTEGER NOT NULL,
        body        BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS decisions_by_member ON decisions (member_id, at)",
    "CREATE INDEX IF NOT EXISTS decisions_by_campaign ON decisions (campaign, at)",
    """CREATE TABLE IF NOT EXISTS decision_outcomes (
        decision_id TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        at          INTEGER NOT NULL,
        source      TEXT NOT NULL,
        PRIMARY KEY (decision_id, outcome)
    )""",
    """CREATE TABLE IF NOT EXISTS segment_members (
        segment_id TEXT NOT NULL,
        member_id  TEXT NOT NULL,
        since      INTEGER NOT NULL,
        PRIMARY KEY (segment_id, member_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS segment_members_by_member ON segment_members (member_id)",
    """CREATE TABLE IF NOT EXISTS segment_transitions (
        segment_id TEXT NOT NULL,
        member_id  TEXT NOT NULL,
        entry      INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        at         INTEGER NOT NULL,
        PRIMARY KEY (segment_id, member_id, entry, kind)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS segment_transitions_by_time ON segment_transitions (segment_id, at)",
    "CREATE INDEX IF NOT EXISTS segment_transitions_by_member ON segment_transitions (member_id)",
    """CREATE TABLE IF NOT EXISTS wishlist_index (
        product_id TEXT NOT NULL,
        member_id  TEXT NOT NULL,
        PRIMARY KEY (product_id, member_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS wishlist_index_by_member ON wishlist_index (member_id)",
)

_MESSAGE_TABLES = ("outbox_messages", "outbox_dead_letters", "outbox_finished")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Decision).decode


class Transition(msgspec.Struct, frozen=True):
    """A member entering (``entered``) or leaving (``exited``) a segment, its n-th entry."""

    segment_id: str
    member_id: str
    entry: int
    kind: Literal["entered", "exited"]
    at: int


class SegmentMember(msgspec.Struct, frozen=True):
    member_id: str
    since: int


class Batch(msgspec.Struct):
    """What one processor step hands the store: written in one transaction."""

    decisions: list[Decision] = msgspec.field(default_factory=list)
    messages: list[OutboundMessage] = msgspec.field(default_factory=list)
    transitions: list[Transition] = msgspec.field(default_factory=list)
    removed_members: list[str] = msgspec.field(default_factory=list)  # merged away: memberships end
    memberships: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)  # member -> segment -> since
    wishlists: dict[str, list[str]] = msgspec.field(default_factory=dict)  # member -> products on the wishlist

    def __bool__(self) -> bool:
        return bool(self.decisions or self.messages or self.transitions or self.removed_members or self.memberships
                    or self.wishlists)


class DecisionStore:
    """Decisions and segment memberships of one data directory; thread-safe."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._read_lock = threading.Lock()
        try:
            with outbox.transaction() as conn:
                for statement in SCHEMA:
                    conn.execute(statement)
            self._reader = sqlite3.connect(outbox.path, isolation_level=None, check_same_thread=False)
            self._reader.execute(BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"decision store {outbox.path}: {exc}") from exc

    # -- writes (the processor) ----------------------------------------------------------------

    def write(self, batch: Batch, now_ms: int) -> list[str]:
        """Store the batch's decisions (if absent), stage their messages, record the transitions.

        ``removed_members`` lose their memberships; ``memberships`` replace a member's (a
        member that took over another's profile in a merge). One durable transaction.
        Messages are staged only for decisions stored now: a decision found already stored
        was delivered (or is being delivered) by its first write. Returns the ids of the
        decisions that were new."""
        new: list[str] = []
        with self.outbox.transaction() as conn:
            for decision in batch.decisions:
                first = decision.chosen[0] if decision.chosen else None
                inserted = conn.execute(
                    "INSERT INTO decisions (decision_id, member_id, user_id, at, trigger_id, campaign, arm, action, "
                    "channel, offer_id, stored_at, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (decision_id) DO NOTHING",
                    (decision.decision_id, decision.member_id, decision.user_id, decision.at, decision.trigger_id,
                     decision.campaign, decision.arm, decision.action,
                     first.channel if first else decision.channel, first.offer_id if first else None, now_ms,
                     _encode(decision)),
                ).rowcount
                if inserted:
                    new.append(decision.decision_id)
            listed = [(product, member) for member, products in batch.wishlists.items() for product in products]
            conn.executemany("DELETE FROM wishlist_index WHERE member_id = ?",
                             [(m,) for m in (*batch.removed_members, *batch.wishlists)])
            conn.executemany("INSERT OR IGNORE INTO wishlist_index VALUES (?,?)", listed)
            gone = [*batch.removed_members, *batch.memberships]
            conn.executemany("DELETE FROM segment_members WHERE member_id = ?", [(m,) for m in gone])
            conn.executemany("INSERT INTO segment_members VALUES (?,?,?)",
                             [(segment, member, since) for member, segments in batch.memberships.items()
                              for segment, since in segments.items()])
            fresh = set(new)
            stage(conn, [m for m in batch.messages if m.decision_id in fresh], now_ms)
            for t in batch.transitions:
                conn.execute("INSERT OR IGNORE INTO segment_transitions VALUES (?,?,?,?,?)",
                             (t.segment_id, t.member_id, t.entry, t.kind, t.at))
                if t.kind == "entered":
                    conn.execute("INSERT OR REPLACE INTO segment_members VALUES (?,?,?)",
                                 (t.segment_id, t.member_id, t.at))
                else:
                    conn.execute("DELETE FROM segment_members WHERE segment_id = ? AND member_id = ?",
                                 (t.segment_id, t.member_id))
        return new

    def record_outcome(self, decision_id: str, outcome: str, at: int, source: str) -> bool:
        """Record that the member ``outcome`` the decision's offer; False if already recorded.

        Raises NotFound for an unknown decision and InvalidInput for an unknown outcome."""
        if outcome not in OUTCOMES:
            raise InvalidInput("outcome", f"must be one of {', '.join(OUTCOMES)}")
        with self.outbox.transaction() as conn:
            if conn.execute("SELECT 1 FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone() is None:
                raise NotFound(f"no decision {decision_id!r}")
            return bool(conn.execute("INSERT OR IGNORE INTO decision_outcomes VALUES (?,?,?,?)",
                                     (decision_id, outcome, at, source)).rowcount)

    def erase_member(self, member_id: str) -> int:
        """Delete the member's decisions, outcomes, memberships and messages; returns rows deleted.

        The messages are found by their ids, ``message_id_for(decision_id, destination)`` for
        every destination the outbox tables name: queued, dead-lettered and finished alike."""
        with self.outbox.transaction() as conn:
            ids = [row[0] for row in conn.execute("SELECT decision_id FROM decisions WHERE member_id = ?",
                                                  (member_id,))]
            destinations = {row[0] for table in _MESSAGE_TABLES
                            for row in conn.execute(f"SELECT DISTINCT destination FROM {table}")}
            messages = [(message_id_for(d, destination),) for d in ids for destination in destinations]
            deleted = 0
            for table in _MESSAGE_TABLES:
                deleted += conn.executemany(f"DELETE FROM {table} WHERE message_id = ?", messages).rowcount
            deleted += conn.executemany("DELETE FROM decision_outcomes WHERE decision_id = ?",
                                        [(d,) for d in ids]).rowcount
            for table in ("decisions", "segment_members", "segment_transitions", "wishlist_index"):
                deleted += conn.execute(f"DELETE FROM {table} WHERE member_id = ?", (member_id,)).rowcount
            return deleted

    # -- reads -------------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"decision store {self.outbox.path}: {exc}") from exc

    def stored(self, decision_ids: Iterable[str]) -> set[str]:
        """Which of ``decision_ids`` are stored."""
        ids = list(decision_ids)
        if not ids:
            return set()
        rows = self._rows("SELECT decision_id FROM decisions WHERE decision_id IN (SELECT value FROM json_each(?))",
                          (msgspec.json.encode(ids).decode(),))
        return {row[0] for row in rows}

    def wishlisted_by(self, product_id: str) -> list[str]:
        """The members who have (or recently had) ``product_id`` on their wishlist."""
        return [row[0] for row in self._rows("SELECT member_id FROM wishlist_index WHERE product_id = ?",
                                             (product_id,))]

    def get(self, decision_id: str) -> Decision | None:
        rows = self._rows("SELECT body FROM decisions WHERE decision_id = ?", (decision_id,))
        return _decode(rows[0][0]) if rows else None

    def outcomes(self, decision_id: str) -> dict[str, int]:
        """The outcomes reported for a decision: outcome -> when (epoch ms)."""
        return dict(self._rows("SELECT outcome, at FROM decision_outcomes WHERE decision_id = ?", (decision_id,)))

    def for_member(self, member_id: str, since: int = 0, limit: int = 1000) -> list[Decision]:
        """The member's decisions from ``since`` on, newest first."""
        rows = self._rows("SELECT body FROM decisions WHERE member_id = ? AND at >= ? ORDER BY at DESC LIMIT ?",
                          (member_id, since, limit))
        return [_decode(row[0]) for row in rows]

    def contact_history(self, member_id: str, since: int) -> list[Send]:
        """What the member was sent from ``since`` on, for the contact policy."""
        rows = self._rows("SELECT at, channel, offer_id, body FROM decisions "
                          "WHERE member_id = ? AND action = 'send' AND at >= ?", (member_id, since))
        sends = []
        for _at, _channel, _offer, body in rows:
            chosen = _decode(body).chosen
            if chosen:
                sends.append(Send(chosen[0].send_at, chosen[0].channel, chosen[0].offer_id))
        return sends

    def decisions(self, *, campaign: str | None = None, trigger_id: str | None = None, since: int = 0,
                  until: int | None = None, after: str | None = None, limit: int = 1000) -> list[Decision]:
        """Trigger decisions in a time range, by campaign or trigger, in ``decision_id`` order from ``after``."""
        rows = self._rows(
            "SELECT body FROM decisions WHERE trigger_id IS NOT NULL "
            "AND (:campaign IS NULL OR campaign = :campaign) AND (:trigger IS NULL OR trigger_id = :trigger) "
            "AND at >= :since AND (:until IS NULL OR at < :until) AND decision_id > :after "
            "ORDER BY decision_id LIMIT :limit",
            {"campaign": campaign, "trigger": trigger_id, "since": since, "until": until, "after": after or "",
             "limit": limit})
        return [_decode(row[0]) for row in rows]

    def campaigns(self) -> list[tuple[str, str, int]]:
        """(campaign, trigger_id, decisions) of every trigger that has decided something."""
        return [tuple(row) for row in self._rows(  # type: ignore[misc]
            "SELECT campaign, trigger_id, count(*) FROM decisions WHERE trigger_id IS NOT NULL "
            "GROUP BY campaign, trigger_id ORDER BY campaign, trigger_id")]

    def segment_members(self, segment_id: str, after: str | None = None, limit: int = 100) -> list[SegmentMember]:
        """The segment's current members in member id order, from after ``after`` (keyset pagination)."""
        rows = self._rows("SELECT member_id, since FROM segment_members WHERE segment_id = ? AND member_id > ? "
                          "ORDER BY member_id LIMIT ?", (segment_id, after or "", limit))
        return [SegmentMember(*row) for row in rows]

    def segment_sizes(self) -> dict[str, int]:
        """Every segment's current size."""
        return dict(self._rows("SELECT segment_id, count(*) FROM segment_members GROUP BY segment_id"))

    def segment_transitions(self, segment_id: str | None = None, member_id: str | None = None,
                            since: int = 0, limit: int = 10_000) -> list[Transition]:
        """Entries and exits, oldest first, of one segment and/or one member."""
        rows = self._rows(
            "SELECT segment_id, member_id, entry, kind, at FROM segment_transitions "
            "WHERE (:segment IS NULL OR segment_id = :segment) AND (:member IS NULL OR member_id = :member) "
            "AND at >= :since ORDER BY at, segment_id, member_id, entry, kind LIMIT :limit",
            {"segment": segment_id, "member": member_id, "since": since, "limit": limit})
        return [Transition(*row) for row in rows]

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()

    # -- reads for the segments and decisions API (added after the write path) -----------------

    def segment_size_history(self, segment_id: str, bucket_ms: int = 86_400_000) -> list[tuple[int, int, int]]:
        """(bucket start, entries, exits) per ``bucket_ms`` bucket (UTC days by default), oldest first."""
        rows = self._rows(
            "SELECT (at / :bucket) * :bucket AS start, sum(kind = 'entered'), sum(kind = 'exited') "
            "FROM segment_transitions WHERE segment_id = :segment GROUP BY start ORDER BY start",
            {"bucket": bucket_ms, "segment": segment_id})
        return [(int(start), int(entered), int(exited)) for start, entered, exited in rows]

    def segment_entries(self, segment_id: str) -> dict[str, int]:
        """Each member's latest entry number into the segment (members who ever entered it)."""
        return dict(self._rows("SELECT member_id, max(entry) FROM segment_transitions "
                               "WHERE segment_id = ? AND kind = 'entered' GROUP BY member_id", (segment_id,)))

    def segment_member_ids(self, segment_id: str) -> dict[str, int]:
        """Every current member of the segment and since when (member id -> epoch ms)."""
        return dict(self._rows("SELECT member_id, since FROM segment_members WHERE segment_id = ?", (segment_id,)))

    def member_decisions(self, member_id: str, before: tuple[int, str] | None = None,
                         limit: int = 50) -> list[Decision]:
        """The member's decisions, newest first (by time, then id), strictly after the cursor ``before``."""
        at, decision = before if before is not None else (2**62, "")
        rows = self._rows(
            "SELECT body FROM decisions WHERE member_id = :member AND (at < :at OR (at = :at AND decision_id < :id)) "
            "ORDER BY at DESC, decision_id DESC LIMIT :limit",
            {"member": member_id, "at": at, "id": decision if before is not None else "\U0010ffff", "limit": limit})
        return [_decode(row[0]) for row in rows]

    def outcomes_of(self, decision_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """The outcomes reported for each of ``decision_ids``: decision -> outcome -> when."""
        ids = list(decision_ids)
        found: dict[str, dict[str, int]] = {}
        if not ids:
            return found
        for decision, outcome, at in self._rows(
                "SELECT decision_id, outcome, at FROM decision_outcomes "
                "WHERE decision_id IN (SELECT value FROM json_each(?))", (msgspec.json.encode(ids).decode(),)):
            found.setdefault(decision, {})[outcome] = at
        return found
