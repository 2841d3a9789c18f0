"""The processor: folds the event log into members, batch by batch, and keeps the hot view.

Each step, in this order (the delivery guarantee is the order):

1. read the next batch of the log after the committed offset;
2. resolve identity for the whole batch first (:meth:`IdentityGraph.resolve`), so that
   a scale-out deployment can partition the fold by canonical member id;
3. combine the profiles of members that merged or were renamed
   (:func:`merge_profiles`; if two profiles share an event, rebuild the member from the
   log instead), then fold each member's events of the batch into its profile;
4. commit the changed members, the changed profiles and the batch's last offset in one
   transaction of the profile store;
5. only then publish the new profiles to the :class:`MemberView` the API reads.

A crash anywhere before 4 leaves the old state and the old offset, so the batch is
simply processed again; after 4 it is never processed again. Because the fold skips
events it has already folded and is order-independent, replaying the log from offset 0
(``loyalty-cdp replay``) gives exactly the profiles incremental processing gave.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import defaultdict

import msgspec

from loyalty_cdp.adapters.eventlog.base import EventLog
from loyalty_cdp.adapters.profilestore.base import Changes, IdentityRecord, ProfileStore
from loyalty_cdp.core.identifiers import (
    ANONYMOUS_ID,
    USER_ID,
    DecodedEvent,
    decode_event,
    identifier_key,
    normalise_identifier,
)
from loyalty_cdp.core.identity import IdentityGraph, IdentityRules, Member, Resolution
from loyalty_cdp.core.profile import Profile, fold, merge_profiles
from loyalty_cdp.errors import Conflict

log = logging.getLogger(__name__)

_encode = msgspec.msgpack.Encoder().encode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode


class MemberView:
    """What readers see: identifier -> member id, and member id -> encoded profile.

    Only the processor thread writes, entry by entry after each commit; readers (the HTTP
    API) never wait for a batch to finish. A member renamed by a merge is published under
    its new id before its old id is removed, so a reader never finds neither.
    """

    def __init__(self, default_region: str | None) -> None:
        self.owner: dict[str, str] = {}
        self.profiles: dict[str, bytes] = {}
        self._region = default_region

    def find(self, kind: str, value: str) -> str | None:
        """The member id owning an identifier as a client sends it (normalised here)."""
        normal = normalise_identifier(kind, value, self._region)
        return None if normal is None else self.owner.get(identifier_key(kind, normal))

    def profile(self, member_id: str) -> Profile | None:
        blob = self.profiles.get(member_id)
        return None if blob is None else _decode_profile(blob)

    def __len__(self) -> int:
        return len(self.profiles)


class Processor:
    def __init__(self, event_log: EventLog, store: ProfileStore, rules: IdentityRules | None = None,
                 batch_size: int = 5_000) -> None:
        self._log = event_log
        self._store = store
        self._rules = rules or IdentityRules()
        self._batch_size = batch_size
        snapshot = store.load()
        self.offset = snapshot.offset
        self._graph = IdentityGraph(self._rules, snapshot.members)
        self.view = MemberView(self._rules.default_region)
        self.view.profiles.update(snapshot.profiles)
        for member in snapshot.members:
            self._publish_identities(member)
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="processor", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New events were appended: wake the processor now rather than at its next poll."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        self._store.close()

    def history_of(self, member_id: str) -> list[dict[str, object]]:
        """The member's identity history with reasons, JSON-ready (read from the store)."""
        return [msgspec.structs.asdict(record) for record in self._store.history(member_id)]

    def catch_up(self) -> int:
        """Process until the end of the log; returns how many events were applied."""
        total = 0
        while applied := self.step():
            total += applied
        return total

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                applied = self.step()
            except Exception:  # a store outage must not kill the thread; the batch is retried
                self.failures += 1
                log.exception("processor step failed; retrying")
                self._stopping.wait(1.0)
                continue
            if not applied:
                self._wakeup.wait(0.25)
                self._wakeup.clear()

    # -- one batch ---------------------------------------------------------------------------

    def step(self) -> int:
        stored = self._log.read(self.offset, self._batch_size)
        if not stored:
            return 0
        events = [decode_event(e) for e in stored]
        resolution = self._graph.resolve(events)
        updated: dict[str, Profile] = {}
        removed = self._combine_renamed(resolution.renamed, updated)
        by_member: dict[str, list[DecodedEvent]] = defaultdict(list)
        for event, member_id in zip(events, resolution.assignments, strict=True):
            if member_id is not None:
                by_member[member_id].append(event)
        for member_id, member_events in by_member.items():
            updated[member_id] = fold(self._current(member_id, updated), member_events,
                                      self._graph.member(member_id))
        members = [m for m in (self._graph.member(mid) for mid in resolution.changed) if m is not None]
        encoded = {member_id: _encode(profile) for member_id, profile in updated.items()}
        last_offset = stored[-1].offset
        self._store.commit(Changes(
            offset=last_offset, members=members, removed_members=list(resolution.renamed),
            profiles=encoded, removed_profiles=removed, renamed=resolution.renamed,
            history=_history(resolution, events),
        ))
        self.offset = last_offset
        self.view.profiles.update(encoded)
        for member in members:
            self._publish_identities(member)
        for old_id in removed:
            self.view.profiles.pop(old_id, None)
        # What survives a batch is long-lived state; keeping it out of the collector's scans
        # makes the next batch's collections cheap (measured: ~10% more events/s).
        gc.freeze()
        return len(stored)

    def _current(self, member_id: str, updated: dict[str, Profile]) -> Profile | None:
        if member_id in updated:
            return updated[member_id]
        return self.view.profile(member_id)

    def _combine_renamed(self, renamed: dict[str, str], updated: dict[str, Profile]) -> list[str]:
        """Carry each vanished member's profile into the member that now holds its identifiers."""
        removed: list[str] = []
        for old_id, new_id in renamed.items():
            old = self.view.profile(old_id)
            if old is None:
                continue
            removed.append(old_id)
            member = self._graph.member(new_id)
            assert member is not None, "the graph always holds the id it renamed to"
            target = self._current(new_id, updated)
            if target is None:
                updated[new_id] = fold(old, [], member)
                continue
            try:
                updated[new_id] = merge_profiles(target, old, member)
            except Conflict:
                updated[new_id] = self._rebuild(member)
        return removed

    def _rebuild(self, member: Member) -> Profile:
        """Fold a member from scratch from its events already in the log (rare: see merge_profiles)."""
        stored = self._log.read_member(member.identities.get(USER_ID, []), member.identities.get(ANONYMOUS_ID, []))
        events = [decode_event(e) for e in stored if e.offset <= self.offset]
        return fold(None, events, member)

    def _publish_identities(self, member: Member) -> None:
        for kind, values in member.identities.items():
            for value in values:
                self.view.owner[identifier_key(kind, value)] = member.id


def _history(resolution: Resolution, events: list[DecodedEvent]) -> list[IdentityRecord]:
    """The batch's merges, first links and rejected links, filed under the final member ids."""
    final = resolution.renamed
    when = {e.message_id: e.timestamp for e in events} if resolution.rejections else {}
    records = [IdentityRecord(final.get(m.into_id, m.into_id), "merge", m.message_id, m.timestamp, m.kind, m.value,
                              other_id=m.from_id) for m in resolution.merges]
    records += [IdentityRecord(final.get(link.member_id, link.member_id), "link", link.message_id, link.timestamp,
                               link.kind, link.value) for link in resolution.links]
    records += [IdentityRecord(final.get(r.member_id, r.member_id), "rejected", r.message_id, when[r.message_id],
                               r.kind, r.value, reason=r.reason) for r in resolution.rejections]
    return records
