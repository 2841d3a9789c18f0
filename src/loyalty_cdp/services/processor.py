"""The processor: folds the event log into members, batch by batch, and keeps the hot view.

Each step, in this order (the delivery guarantee is the order):

1. read the next batch of the log after the committed offset;
2. resolve identity for the whole batch first (:meth:`IdentityGraph.resolve`), so that
   a scale-out deployment can partition the fold by canonical member id; the graph holds just
   the members owning an identifier of the batch, loaded from the profile store's identifier
   index (it resolves the batch as the whole graph would), and is dropped after the batch;
3. combine the profiles of members that merged or were renamed
   (:func:`merge_profiles`; if two profiles share an event, rebuild the member from the
   log instead), then fold each member's events of the batch into its profile, and run
   the loyalty program on them (:class:`LoyaltyStage`);
5. run the decisioning stage (:class:`DecisioningStage`) on the changed members with their
   new events: segment memberships, triggers, decisions;
6. append the calls the batch emitted (loyalty, segment and ``Offer Granted`` events; their
   message ids are deterministic, so a redo after a crash is deduplicated by the log), then
   store the decisions with their outbound messages (inserted if absent by decision id);
7. commit the changed members (with their identifier index entries), the changed profiles and
   the batch's last offset in one transaction of the profile store;
8. only then publish the new profiles to the :class:`MemberView` the API reads.

A crash anywhere before 7 leaves the old state and the old offset, so the batch is
simply processed again (re-emitting the same events, which the log keeps once, and the same
decisions, which the decision store keeps once); after 7 it is never processed again. Because the fold skips
events it has already folded and is order-independent, replaying the log from offset 0
(``loyalty-cdp replay``) gives exactly the profiles incremental processing gave.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from functools import partial
from itertools import islice
from typing import Any

import msgspec

from loyalty_cdp.adapters.decisionstore import Batch
from loyalty_cdp.adapters.eventlog.base import EventLog, StoredEvent
from loyalty_cdp.adapters.profilestore.base import Changes, IdentityRecord, ProfileStore
from loyalty_cdp.adapters.suppression import SuppressionList as Suppression
from loyalty_cdp.core.consent import (
    CONSENT_EVENT,
    ConsentState,
    consent_from_builtins,
    consent_to_builtins,
    fold_consent,
    merge_consent,
)
from loyalty_cdp.core.events import normalise
from loyalty_cdp.core.identifiers import (
    ANONYMOUS_ID,
    USER_ID,
    DecodedEvent,
    decode_event,
    identifier_key,
    normalise_identifier,
)
from loyalty_cdp.core.identity import IdentityGraph, IdentityRules, Member, Resolution, batch_identifiers
from loyalty_cdp.core.loyalty import CampaignBudgets, LoyaltyEngine
from loyalty_cdp.core.profile import Profile, fold, merge_profiles, unseen
from loyalty_cdp.core.segments.membership import CHANNEL as SEGMENTS_CHANNEL
from loyalty_cdp.errors import Conflict
from loyalty_cdp.services.decisioning_stage import DecisioningStage
from loyalty_cdp.services.loyalty_stage import REBUILDS_PER_READ, LoyaltyStage

log = logging.getLogger(__name__)

_encode = msgspec.msgpack.Encoder().encode
_decode_profile = msgspec.msgpack.Decoder(Profile).decode
_decode_budgets = msgspec.msgpack.Decoder(CampaignBudgets).decode


CACHED_PROFILES = 4_096  # encoded profiles a store-backed view keeps in memory (the latest read)
START_CHUNK = 500  # encoded profiles in memory at once while a processor starts


class StoredProfiles(MutableMapping[str, bytes]):
    """Member id -> encoded profile, with the encoded profiles left in the profile store.

    Only the ids are in memory, plus the ``cache_size`` profiles read most recently (an
    LRU) and the profiles held across a commit (:meth:`hold`). A miss reads the store's last
    commit (SQLite: a read-only connection per thread, in-process, no network round trip).
    The processor publishes after each commit: :meth:`update` and :meth:`pop` name the ids
    that changed; a cached profile that changed is replaced, so no reader sees an older
    profile than the view published. A profile committed but not yet published is readable
    already (the store's identifier index finds its member from the commit on); the ids in
    memory serve ``len``, ``in`` and iteration. ``values()`` and ``items()`` walk the store in chunks.
    """

    def __init__(self, read: Callable[[str], bytes | None], scan: Callable[[], Iterator[tuple[str, bytes]]],
                 cache_size: int = CACHED_PROFILES) -> None:
        self._read = read
        self._scan = scan
        self.cache_size = cache_size  # may be changed at any time; applies from the next miss
        self._ids: set[str] = set()
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._held: dict[str, bytes] = {}
        # A miss reads the store and caches under this lock, and a publication replaces cached
        # profiles under it: a read of a profile older than the one being published cannot land
        # in the cache after the publication.
        self._lock = threading.Lock()

    def __getitem__(self, member_id: str) -> bytes:
        held = self._held.get(member_id)
        if held is not None:
            return held
        with self._lock:
            blob = self._cache.get(member_id)
            if blob is not None:
                self._cache.move_to_end(member_id)
                return blob
            blob = self._read(member_id)
            if blob is None:  # never stored, or removed from the store (the view forgets it next)
                raise KeyError(member_id)
            self._cache[member_id] = blob
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return blob

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def __setitem__(self, member_id: str, blob: bytes) -> None:
        self.update({member_id: blob})

    def __delitem__(self, member_id: str) -> None:
        if member_id not in self._ids:
            raise KeyError(member_id)
        self.pop(member_id)

    def update(self, profiles: Any = (), /, **_: Any) -> None:
        """Publish committed profiles: their ids, and the new profile of any that is cached."""
        items = profiles.items() if isinstance(profiles, Mapping) else profiles
        with self._lock:
            for member_id, blob in items:
                self._ids.add(sys.intern(member_id))
                if member_id in self._cache:
                    self._cache[member_id] = blob

    def pop(self, member_id: str, *default: Any) -> Any:
        """Forget a member (its profile was removed from the store, or is about to be)."""
        with self._lock:
            held = self._held.pop(member_id, None)
            cached = self._cache.pop(member_id, None)
            if member_id not in self._ids:
                if default:
                    return default[0]
                raise KeyError(member_id)
            self._ids.discard(member_id)
        return held if held is not None else cached

    def hold(self, member_ids: Iterable[str]) -> None:
        """Keep these members' current profiles in memory until they are popped: a commit is about
        to delete them from the store while the identifier index still points at them."""
        for member_id in member_ids:
            try:
                self._held[member_id] = self[member_id]
            except KeyError:
                continue

    def values(self) -> Iterator[bytes]:  # type: ignore[override]
        return (blob for _, blob in self.items())

    def items(self) -> Iterator[tuple[str, bytes]]:  # type: ignore[override]
        """Every published member's committed profile, walked through the store."""
        return ((member_id, blob) for member_id, blob in self._scan() if member_id in self._ids)


class MemberView:
    """What readers see: identifier -> member id, and member id -> encoded profile.

    Only the processor thread writes; readers (the HTTP API) never wait for a batch to finish.
    A member renamed by a merge is findable under its new id before its old id is removed, so a
    reader never finds neither.

    With a store that reads in process (the embedded SQLite store), both stay in the store:
    :meth:`find` reads the store's identifier index (committed with the members, the old id's
    profile held across the commit, see :meth:`hold`) and ``profiles`` is a
    :class:`StoredProfiles` (the ids and an LRU of ``cache_size`` profiles in memory). Otherwise
    (PostgreSQL, where a read would be a network round trip) the view holds the identifier index
    (``owner``, published entry by entry after each commit) and every encoded profile.
    """

    def __init__(self, default_region: str | None, store: Any = None, cache_size: int = CACHED_PROFILES) -> None:
        in_process = hasattr(store, "read_profile") and hasattr(store, "scan_profiles")
        self.profiles: MutableMapping[str, bytes] = (
            StoredProfiles(store.read_profile, store.scan_profiles, cache_size) if in_process else {}
        )
        self.owner: dict[str, str] | None = None if in_process else {}  # None: the store's index is read
        self._owner_of: Callable[[str], str | None] = store.owner if self.owner is None else self.owner.get
        self._region = default_region

    def find(self, kind: str, value: str) -> str | None:
        """The member id owning an identifier as a client sends it (normalised here)."""
        normal = normalise_identifier(kind, value, self._region)
        return None if normal is None else self._owner_of(identifier_key(kind, normal))

    def profile(self, member_id: str) -> Profile | None:
        blob = self.profiles.get(member_id)
        return None if blob is None else _decode_profile(blob)

    def all_profiles(self) -> Iterator[Profile]:
        """Every member's profile, decoded one at a time (for batch work, in a worker thread).

        From the store a scan reads them in pages and leaves the cache of hot members alone; a
        dict is copied first (one C-level copy, atomic under the GIL), so the processor can keep
        publishing while the caller walks the copy."""
        blobs = self.profiles.values() if isinstance(self.profiles, StoredProfiles) else dict(self.profiles).values()
        return (_decode_profile(blob) for blob in blobs)

    def hold(self, member_ids: Iterable[str]) -> None:
        """Before a commit removes these members' profiles from the store (and points their identifiers
        elsewhere): keep them readable for whoever found them before, until the processor pops them."""
        if isinstance(self.profiles, StoredProfiles):
            self.profiles.hold(member_ids)

    def publish(self, members: Iterable[Member]) -> None:
        """Point each of these members' identifiers at it in the in-memory index (a store-backed
        view's index was committed with them)."""
        if self.owner is None:
            return
        owner = self.owner
        for member in members:
            for kind, values in member.identities.items():
                for value in values:
                    owner[identifier_key(kind, value)] = member.id

    def forget(self, member: Member) -> None:
        """An erased member: no longer readable, and (in memory) its identifiers point nowhere."""
        self.profiles.pop(member.id, None)
        if self.owner is None:
            return
        for kind, values in member.identities.items():
            for value in values:
                key = identifier_key(kind, value)
                if self.owner.get(key) == member.id:
                    del self.owner[key]

    def __len__(self) -> int:
        return len(self.profiles)


ADVANCE_EVERY_S = 5.0  # how often due loyalty transitions and the decisioning sweep are looked at
IDLE_SLICE_S = 0.05  # idle work (due transitions, the sweep) goes on this long, then new events go first
SWEEP_EVERY_S = 3_600.0  # a full sweep of every member starts at most this often
STEP_TARGET_S = 0.25  # in the server's loop a step aims at this long, so the back-off is never far away
# A step holds the interpreter lock that the HTTP event loop needs for every member read: reads
# queue behind it for as long as it runs. While members are being read, steps are this short.
READING_STEP_TARGET_S = 0.03
READING_LINGERS_S = 1.0  # steps stay short for this long after the last member read
FIRST_STEP_EVENTS = 500  # the server's loop starts small and grows towards batch_size at its target
SMALLEST_STEP_EVENTS = 50  # a slow fold's steps shrink towards their target duration, not below this
HISTORY_EVENTS_KEPT = 50_000  # history events a batch keeps for a second use (about 35 MB at most)


class Processor:
    def __init__(self, event_log: EventLog, store: ProfileStore, rules: IdentityRules | None = None,
                 batch_size: int = 5_000, loyalty: LoyaltyEngine | None = None,
                 suppression: Suppression | None = None, decisioning: DecisioningStage | None = None) -> None:
        self._log = event_log
        self._suppression = suppression
        self._step_lock = threading.Lock()  # a batch, a transition run or an erasure: one at a time
        self._store = store
        self._rules = rules or IdentityRules()
        if suppression is not None and suppression.region != self._rules.default_region:
            # The batch's identifier keys are checked against the list as identity extracted them.
            raise ValueError(f"the suppression list normalises phone numbers for {suppression.region}, "
                             f"identity resolution for {self._rules.default_region}: they must agree")
        self._batch_size = batch_size
        self._step_size = min(FIRST_STEP_EVENTS, batch_size)  # the server loop's batch (see _run)
        self._sized_for = STEP_TARGET_S  # the step target that _step_size was sized for
        self._read_at = -READING_LINGERS_S  # monotonic time of the last member read (see reading)
        self._emitted = 0  # calls appended through emit (see _run: the processor's own appends are not ingest)
        self.view = MemberView(self._rules.default_region, store)
        # Each batch loads the members it touches from the store; every member is needed only for
        # a view that holds the identifier index in memory. A view over the store keeps only the
        # ids: the profiles are walked in chunks from the store, so that start-up never holds them all.
        in_memory = not isinstance(self.view.profiles, StoredProfiles)
        snapshot = store.load(members=self.view.owner is not None, profiles=in_memory)
        self.offset = snapshot.offset
        self._horizon = snapshot.offset  # history reads stop here: what the log held for this batch
        self._histories: dict[str, list[StoredEvent]] = {}  # member id -> history read in this batch
        self._history_events = 0  # events in _histories
        self.view.publish(snapshot.members)
        self.loyalty: LoyaltyStage | None = None
        self._budgets = _decode_budgets(snapshot.shared) if snapshot.shared else CampaignBudgets()
        if loyalty is not None:
            # Campaign budgets are the one piece of loyalty state shared between members: the
            # processor owns them and commits them with the offset, like every other state.
            loyalty.budgets = self._budgets
            self.loyalty = LoyaltyStage(loyalty, self._members_history)
        profiles = iter(snapshot.profiles.items() if in_memory else store.iter_profiles())
        while chunk := list(islice(profiles, START_CHUNK)):
            self.view.profiles.update(chunk)
            if self.loyalty is not None:
                self.loyalty.load(chunk)
        self.decisioning = decisioning
        self._sweep: list[str] = []  # member ids the current decisioning sweep has still to look at
        self._sweep_started = -SWEEP_EVERY_S
        self.due_left = False  # advance_due stopped at its time limit with transitions still due
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

    def reading(self) -> None:
        """A member read is being answered: for the next ``READING_LINGERS_S`` the server loop's
        steps aim at ``READING_STEP_TARGET_S``, so that reads never queue long behind a step."""
        self._read_at = time.monotonic()

    def step_target_s(self) -> float:
        """How long the server loop's next step should take (see :meth:`reading`)."""
        if time.monotonic() - self._read_at < READING_LINGERS_S:
            return READING_STEP_TARGET_S
        return STEP_TARGET_S

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

    def _run(self, yield_ratio: float = 3.0, longest_yield_s: float = 10.0, quiet_s: float = 0.2,
             probe_every_s: float = 2.0) -> None:
        """Process the log until stopped; at rest, run the due loyalty transitions and the sweep.

        The processor backs off while ingest outruns it, so that ingest gets the CPU. After a
        step that found a full batch waiting, it sleeps up to ``yield_ratio`` times the step's
        duration (at most ``longest_yield_s``) for as long as appends keep arriving (one at least
        every ``quiet_s``) faster than the step consumed the log. The fold cannot keep pace then
        anyway; sleeping hands the interpreter lock to the HTTP event loop and a core to the event
        log writer. The processor catches up once ingest slows down or pauses (its lag is
        ``lcdp_processor_lag_events`` in /metrics). When appends stop, or come slower than the
        fold goes, the sleep ends and the next ``probe_every_s`` of steps run back to back: a
        processor that can keep pace never falls behind for backing off, and catching up on a
        quiet log loses at most ``quiet_s`` per ``probe_every_s``. A full step of that window
        during which others appended more than it folded ends the window: ingest is back (without
        this, every burst after a pause began with up to ``probe_every_s`` of steps holding the
        interpreter lock against it: bench/ingest.py's later runs, started after a pause, were a
        quarter slower than its first).

        A step's size follows the fold's pace (:func:`next_step_size`): about ``STEP_TARGET_S``
        of work, so that the back-off starts within that time of a burst (a first step of 5,000
        new members took 3-7 s, all of it sharing the interpreter lock with the event loop), and
        about ``READING_STEP_TARGET_S`` while members are being read (:meth:`reading`: a py-spy
        timeline lined every lookup stall up with a step; bench/lookup.py with ingest at 80%, p99
        93-126 ms against 127-176 ms with quarter-second steps, see docs/benchmarks.md).
        """
        advanced_at = 0.0
        quiet_until = 0.0  # until then, steps follow each other without backing off
        while not self._stopping.is_set():
            try:
                with self._step_lock:
                    started = time.monotonic()
                    probing = started < quiet_until
                    if probing:  # the log's end, and what the processor emitted so far, as the step starts
                        before, emitted = self._log.last_offset(), self._emitted
                    target = self.step_target_s()
                    size = resized_step(self._step_size, self._sized_for, target, self._batch_size)
                    applied = self.step(size)
                    spent = time.monotonic() - started
                    self._step_size = next_step_size(size, applied, spent, self._batch_size, target)
                    self._sized_for = target
                    if not applied and time.monotonic() - advanced_at >= ADVANCE_EVERY_S:
                        advanced_at = time.monotonic()
                        self.advance_due(int(time.time() * 1000), time.monotonic() + IDLE_SLICE_S)
                        self.sweep(int(time.time() * 1000))
                    elif not applied and self.due_left:  # due transitions left over use the idle moments
                        self.advance_due(int(time.time() * 1000), time.monotonic() + IDLE_SLICE_S)
                    elif not applied and self._sweep:  # so does a sweep under way
                        self.sweep(int(time.time() * 1000))
                    mark = self._log.last_offset() if applied >= size else 0
                    if probing and applied >= size and mark - before - (self._emitted - emitted) > applied:
                        quiet_until = 0.0  # others appended more than the step folded: ingest is back
            except Exception:  # a store outage must not kill the thread; the batch is retried
                self.failures += 1
                log.exception("processor step failed; retrying")
                self._stopping.wait(1.0)
                continue
            if applied >= size and started >= quiet_until:
                # Behind by a full batch. The step's own appends set the wakeup: only those that
                # arrive from now on (ingest, activation) count.
                self._wakeup.clear()
                since = time.monotonic()
                deadline = since + min(spent * yield_ratio, longest_yield_s)
                outrun = False
                while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:
                    if not self._wakeup.wait(min(left, quiet_s)):
                        break  # no append for quiet_s: ingest paused
                    self._wakeup.clear()
                    elapsed = time.monotonic() - since
                    try:  # appended since the step, per second, against the step's events per second
                        outrun = elapsed < quiet_s or (self._log.last_offset() - mark) * spent >= applied * elapsed
                    except Exception:  # the log is unreadable: the next step meets it and retries
                        outrun = False
                    if not outrun:
                        break  # appends come slower than the fold goes: catch up now
                if not outrun:
                    quiet_until = time.monotonic() + probe_every_s
            elif not applied and not self._sweep and not self.due_left:
                self._wakeup.wait(0.25)
                self._wakeup.clear()

    # -- one batch ---------------------------------------------------------------------------

    def step(self, limit: int | None = None) -> int:
        """Fold the next ``limit`` events of the log (``batch_size`` by default); returns how many."""
        # A batch's objects (decoded events, profiles being folded) live until its end and hold few
        # cycles: the cyclic collector would scan them again and again, full collections included
        # (measured: 9% of replay CPU). It waits for the batch; then one collection of the young
        # generations frees the batch's cycles, and what survives is long-lived state, kept out of
        # later scans (gc.freeze: the next batches' collections stay cheap).
        enabled = gc.isenabled()
        gc.disable()
        try:
            applied = self._fold_batch(limit or self._batch_size)
        finally:
            self._histories.clear()
            self._history_events = 0
            if enabled:
                gc.enable()
        if applied:
            gc.collect(1)
            gc.freeze()
        return applied

    def _fold_batch(self, limit: int) -> int:
        """Fold up to ``limit`` events of the log; returns how many it consumed (suppressed ones included)."""
        stored = self._log.read(self.offset, limit)
        if not stored:
            return 0
        consumed = len(stored)
        self._horizon = last_offset = stored[-1].offset
        events = [decode_event(e) for e in stored]
        found = batch_identifiers(events, self._rules)
        keys = {key for event_keys in found for key in event_keys}
        if self._suppression is not None and (suppressed := self._suppression.suppressed_keys(keys)):
            # Events of an erased person that were already in flight when the erasure began.
            kept = [index for index, event_keys in enumerate(found) if suppressed.isdisjoint(event_keys)]
            stored, events, found = [stored[i] for i in kept], [events[i] for i in kept], [found[i] for i in kept]
            keys = {key for event_keys in found for key in event_keys}
        graph = IdentityGraph(self._rules, self._store.members_owning(keys))
        resolution = graph.resolve(events, found)
        updated: dict[str, Profile] = {}
        removed, rebuild = self._combine_renamed(resolution.renamed, updated, graph)
        by_member: dict[str, list[int]] = defaultdict(list)
        for index, member_id in enumerate(resolution.assignments):
            if member_id is not None:
                by_member[member_id].append(index)
        emitted: list[dict[str, Any]] = []
        budgets_before = dict(self._budgets.spent)
        fresh: dict[str, list[DecodedEvent]] = {}
        for member_id, indices in by_member.items():
            member_events = [events[i] for i in indices]
            before = self._current(member_id, updated)
            if self.decisioning is not None:
                fresh[member_id] = unseen(before, member_events)
            # Segment Entered/Exited are derived from the profile at the time they were evaluated:
            # the triggers read them, the profile does not fold them back into itself.
            folded = [e for e in member_events if e.channel != SEGMENTS_CHANNEL]
            profile = fold(before, folded, graph.member(member_id)) if folded or before is None else before
            if any(e.consent or e.event == CONSENT_EVENT for e in member_events):
                profile.consent = consent_to_builtins(fold_consent(_consent(profile), member_events))
            if self.loyalty is not None and member_id not in rebuild:
                emitted += self.loyalty.apply(profile, [stored[i] for i in indices])
            updated[member_id] = profile
        if self.loyalty is not None:
            emitted += self.loyalty.rebuild([updated[member_id] for member_id in rebuild])
            for old_id in removed:
                self.loyalty.forget(old_id)
        batch = Batch()
        if self.decisioning is not None:
            self._decisioning_stage(updated, fresh, rebuild | {resolution.renamed[old] for old in removed},
                                    removed, batch, emitted)
        members = [m for m in (graph.member(mid) for mid in resolution.changed) if m is not None]
        self.emit(emitted)
        if self.decisioning is not None:
            self.decisioning.write(batch)
        encoded = {member_id: _encode(profile) for member_id, profile in updated.items()}
        self.view.hold(removed)
        self._store.commit(Changes(
            offset=last_offset, members=members, removed_members=list(resolution.renamed),
            profiles=encoded, removed_profiles=removed, renamed=resolution.renamed,
            history=_history(resolution, events),
            shared=_encode(self._budgets) if self._budgets.spent != budgets_before else None,
        ))
        self.offset = last_offset
        self.view.profiles.update(encoded)
        self.view.publish(members)
        for old_id in removed:
            self.view.profiles.pop(old_id, None)
        return consumed

    def advance_due(self, now_ms: int, until: float | None = None) -> int:
        """Run the loyalty transitions that are due (expiry, pending -> active, tier reviews).

        With ``until`` (monotonic clock) it stops then and leaves ``due_left`` set: the processor
        comes back to the rest at its next idle moment, so new events never wait long."""
        if self.loyalty is None:
            return 0
        updated: dict[str, Profile] = {}
        emitted: list[dict[str, Any]] = []
        due = self.loyalty.members_due(now_ms)[: self._batch_size]
        self.due_left = False
        for done, member_id in enumerate(due):
            if until is not None and time.monotonic() >= until:
                self.due_left = done < len(due)
                break
            profile = self.view.profile(member_id)
            if profile is None:
                self.loyalty.forget(member_id)
                continue
            emitted += self.loyalty.advance(profile, now_ms)
            updated[member_id] = profile
        if not updated:
            return 0
        self.emit(emitted)
        encoded = {member_id: _encode(profile) for member_id, profile in updated.items()}
        self._store.commit(Changes(offset=self.offset, profiles=encoded))
        self.view.profiles.update(encoded)
        return len(updated)

    def _decisioning_stage(self, updated: dict[str, Profile], fresh: dict[str, list[DecodedEvent]],
                           merged: set[str], removed: list[str], batch: Batch, emitted: list[dict[str, Any]]) -> None:
        """Segments, triggers and decisions for the batch's changed members (members merged in
        the batch recompute their event windows from their whole history, read for up to
        ``REBUILDS_PER_READ`` merged members at a time: a history read scans the log's member index)."""
        assert self.decisioning is not None
        in_order = [member_id for member_id in updated if member_id in merged]
        position = {member_id: index for index, member_id in enumerate(in_order)}
        histories: dict[str, list[StoredEvent]] = {}  # the merged members of the current read

        def history_of(member_id: str) -> list[DecodedEvent]:
            if member_id not in histories:
                start = position[member_id]
                chunk = in_order[start:start + REBUILDS_PER_READ]
                histories.clear()
                histories.update(zip(chunk, self._members_history([updated[m] for m in chunk]), strict=True))
            return [decode_event(e) for e in histories[member_id]]

        for member_id, profile in updated.items():
            history = partial(history_of, member_id) if member_id in merged else None
            updated[member_id] = self.decisioning.member(profile, fresh.get(member_id, []), batch, emitted, history)
        self.decisioning.catalog([e for events in fresh.values() for e in events],
                                 lambda member_id: updated.get(member_id) or self.view.profile(member_id),
                                 batch, emitted)
        if removed:
            self.decisioning.forget(removed, batch)

    def sweep(self, now_ms: int) -> int:
        """Look at the next slice of members for segments and triggers that change with time alone.

        A full pass over every member starts at most every ``SWEEP_EVERY_S``; each call looks at
        members for ``IDLE_SLICE_S`` (so new events wait that long at most) and the processor
        calls it whenever it is idle until the pass is done. Returns how many members changed."""
        if self.decisioning is None or not self.decisioning.time_dependent(now_ms):
            return 0
        if not self._sweep:
            if time.monotonic() - self._sweep_started < SWEEP_EVERY_S:
                return 0
            self._sweep_started = time.monotonic()
            self._sweep = list(self.view.profiles)
        return self._look_again(self._sweep, now_ms, time.monotonic() + IDLE_SLICE_S)

    def reevaluate(self, member_ids: Sequence[str], now_ms: int) -> int:
        """Evaluate segments and triggers for these members now (a segment defined or edited
        through the API was recomputed in batch: its members get their events and triggers)."""
        if self.decisioning is None:
            return 0
        with self._step_lock:
            return self._look_again(list(member_ids), now_ms)

    def _look_again(self, member_ids: list[str], now_ms: int, until: float | None = None) -> int:
        """Evaluate these members now, taking them from the end of ``member_ids`` (all of them,
        or until ``until`` on the monotonic clock)."""
        assert self.decisioning is not None
        batch = Batch()
        emitted: list[dict[str, Any]] = []
        updated: dict[str, Profile] = {}
        while member_ids and (until is None or time.monotonic() < until):
            member_id = member_ids.pop()
            profile = self.view.profile(member_id)
            if profile is None:
                continue
            after = self.decisioning.sweep(profile, now_ms, batch, emitted)
            if after is not profile:
                updated[member_id] = after
        self.emit(emitted)
        self.decisioning.write(batch)
        if updated:
            encoded = {member_id: _encode(profile) for member_id, profile in updated.items()}
            self._store.commit(Changes(offset=self.offset, profiles=encoded))
            self.view.profiles.update(encoded)
        return len(updated)

    def emit(self, calls: list[dict[str, Any]]) -> None:
        """Append Segment calls durably and wake the processor (thread-safe).

        The processor's own (loyalty, segment and grant events) go in before the state that
        emitted them is committed; activation appends delivery status and tracking events. A call
        the log already holds is left out before it is normalised: a replay emits again every call
        the first run emitted (their message ids are deterministic), which was 8% of its time."""
        if not calls:
            return
        known = self._log.known([call["messageId"] for call in calls])
        received_at = int(time.time() * 1000)
        fresh = [normalise(call, call_type=None, received_at=received_at, default_message_id=call["messageId"])
                 for call in calls if call["messageId"] not in known]
        if not fresh:
            return
        self._log.append(fresh)
        self._emitted += len(fresh)
        self._wakeup.set()

    def _current(self, member_id: str, updated: dict[str, Profile]) -> Profile | None:
        if member_id in updated:
            return updated[member_id]
        # Every profile this processor committed is published (the view's ids) before its next
        # batch: a member not among them is new, and asking the store would only find nothing
        # (6% of a step of new members, each such miss a query of the profile store).
        if member_id not in self.view.profiles:
            return None
        return self.view.profile(member_id)

    def _combine_renamed(self, renamed: dict[str, str], updated: dict[str, Profile],
                         graph: IdentityGraph) -> tuple[list[str], set[str]]:
        """Carry each vanished member's profile into the member that now holds its identifiers.

        Returns the vanished ids, and the members whose loyalty state must be rebuilt from
        their whole history because a profile with events of its own was merged into them.
        """
        removed: list[str] = []
        rebuild: set[str] = set()
        for old_id, new_id in renamed.items():
            old = self.view.profile(old_id)
            if old is None:
                continue
            removed.append(old_id)
            member = graph.member(new_id)
            assert member is not None, "the graph always holds the id it renamed to"
            target = self._current(new_id, updated)
            if target is None:
                updated[new_id] = fold(old, [], member)
            else:
                try:
                    updated[new_id] = merge_profiles(target, old, member)
                except Conflict:
                    updated[new_id] = self._rebuild(member)
                if old.consent:
                    updated[new_id].consent = consent_to_builtins(merge_consent(_consent(target), _consent(old)))
            # Events the absorbed profile held (anonymous browsing, wishlists, a purchase before
            # login) now belong to the member: its loyalty state is rebuilt from the whole history,
            # as a replay of the log would build it.
            if updated[new_id].user_id is not None and (old.loyalty or old.activity.events):
                rebuild.add(new_id)
        return removed, rebuild

    def _rebuild(self, member: Member) -> Profile:
        """Fold a member from scratch from its events already in the log (rare: see merge_profiles)."""
        stored = self._log.read_member(member.identities.get(USER_ID, []), member.identities.get(ANONYMOUS_ID, []),
                                       through=self.offset)  # this batch is folded next
        events = [decode_event(e) for e in stored if e.channel != SEGMENTS_CHANNEL]
        return fold(None, events, member)

    def erase_member(self, member_id: str) -> Member | None:
        """Erase a member from the event log, the profile store (its identifier index too) and the view.

        Runs between batches (it takes the processor's step lock), so no batch is half-way
        through the member. Add the person's identifiers to the suppression list first, so that
        nothing new arrives for them. Returns the member's identities as they were, or None.
        """
        with self._step_lock:
            member = self._store.member(member_id)
            if member is None:
                return None
            self._log.delete_member(member.identities.get(USER_ID, []), member.identities.get(ANONYMOUS_ID, []))
            users = set(member.identities.get(USER_ID, []))
            grants = [key for key in self._budgets.grants if key.split("\x1f")[1] in users]
            if grants:  # campaign budgets keep what was spent, and forget who it was granted to
                for key in grants:
                    del self._budgets.grants[key]
                self._store.commit(Changes(offset=self.offset, shared=_encode(self._budgets)))
            self._store.erase_member(member_id)
            self.view.forget(member)
            if self.loyalty is not None:
                self.loyalty.forget(member_id)
            return member

    def _members_history(self, profiles: Sequence[Profile]) -> list[list[StoredEvent]]:
        """Each member's events in the log up to the end of the batch being processed, those not yet
        read in this batch read together (one read of the log, about the cost of one member's: the
        SQLite log scans its member index up to the batch per read, however few the ids). A member
        merged in the batch needs its history twice, for the loyalty rebuild and for the decisioning
        stage's event windows: the second is the first's, kept until the batch ends (up to
        ``HISTORY_EVENTS_KEPT`` events; past that a second read reads again)."""
        kept = self._histories
        missing = [profile for profile in profiles if profile.member_id not in kept]
        read = self._log.read_members(
            [(profile.identities.get(USER_ID, []), profile.identities.get(ANONYMOUS_ID, [])) for profile in missing],
            through=self._horizon,
        ) if missing else []
        fresh = dict(zip((profile.member_id for profile in missing), read, strict=True))
        for member_id, history in fresh.items():
            if self._history_events + len(history) <= HISTORY_EVENTS_KEPT:
                kept[member_id] = history
                self._history_events += len(history)
        return [kept[p.member_id] if p.member_id in kept else fresh[p.member_id] for p in profiles]


def resized_step(size: int, sized_for_s: float, target_s: float, largest: int) -> int:
    """A step size sized for a ``sized_for_s`` target, for a shorter ``target_s``: members began to be
    read since it was sized, and the next step must already be short (a step sized for a quarter
    second before the first lookup took 0.6 s under ingest, stalling the lookups behind it)."""
    if target_s >= sized_for_s:
        return size
    return max(min(SMALLEST_STEP_EVENTS, largest), int(size * target_s / sized_for_s))


def next_step_size(size: int, applied: int, spent_s: float, largest: int, target_s: float = STEP_TARGET_S) -> int:
    """The next step's size: what the last full step's pace gets done in ``target_s``, at most
    twice the last size and within [``SMALLEST_STEP_EVENTS``, ``largest``]. A step that found
    fewer events than it asked for says nothing about the pace: the size stays."""
    if applied < size or spent_s <= 0:
        return size
    paced = int(min(applied / spent_s * target_s, 2 * size, largest))  # min first: a tiny spent_s is inf
    return max(min(SMALLEST_STEP_EVENTS, largest), paced)


def _consent(profile: Profile) -> ConsentState:
    return consent_from_builtins(profile.consent) if profile.consent else ConsentState(purposes={})


def _history(resolution: Resolution, events: list[DecodedEvent]) -> list[IdentityRecord]:
    """The batch's merges, first links and rejected links, filed under the final member ids."""
    # Each record goes to the final member of the event that made it: a member created and then
    # merged or renamed within the batch has an id that no longer exists once the batch ends.
    final = {e.message_id: member for e, member in zip(events, resolution.assignments, strict=True) if member}
    when = {e.message_id: e.timestamp for e in events} if resolution.rejections else {}
    records = [IdentityRecord(final.get(m.message_id, m.into_id), "merge", m.message_id, m.timestamp, m.kind,
                              m.value, other_id=m.from_id) for m in resolution.merges]
    records += [IdentityRecord(final.get(link.message_id, link.member_id), "link", link.message_id, link.timestamp,
                               link.kind, link.value) for link in resolution.links]
    records += [IdentityRecord(final.get(r.message_id, r.member_id), "rejected", r.message_id, when[r.message_id],
                               r.kind, r.value, reason=r.reason) for r in resolution.rejections]
    return records
