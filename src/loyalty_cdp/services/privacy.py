"""Data-subject requests end to end: resolve the person from any identifier, then serve the right in every store.

One :class:`PrivacyService` serves the HTTP API (over the server's components) and the
``loyalty-cdp privacy`` command (over a stopped server's data directory). A request is
validated and stored (``received``), run (``in_progress``), and ends ``completed`` with its
counts, or ``failed`` with the reason; a failed request is run again by repeating it with
the same ``Idempotency-Key``. Every step of every right is idempotent, so a re-run finishes
what the failed run left. Each request is audited when received and when it ends.

The erasure runs in this order (the guarantee is the order):

1. **suppress** every identifier the member holds (and the one given): from this commit on,
   ingest drops their events and the processor refuses to fold one already in flight;
2. wait until the ingest queue holds nothing accepted before step 1 (bounded);
3. hold the member's liability line (anonymised totals are settled in step 7);
4. delete the member's **scores** (live and back-test stores; their WALs truncated);
5. **redact** every other privacy request about any of the identifiers;
6. **erase** the member from the event log, the profile store, the identity graph and the
   processor's view (:meth:`Processor.erase_member`, between batches);
7. **activation**: their decisions, outcomes, segment memberships and history, messages
   (queued, dead-lettered, sent), sent-message rows, pending status events and SMS STOP
   entries are deleted (``secure_delete``), the outbox file is checkpointed and, when any
   of their identifiers is still in its bytes (rows an earlier delete left in free pages),
   vacuumed; their hashed rows leave every audience export file; every webhook destination
   is sent a signed ``member.erased`` event;
8. **settle** the liability line into the erased-members totals;
9. complete the request, which redacts it too, and audit the counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loyalty_cdp.adapters.audit import AuditLog, person_subject
from loyalty_cdp.adapters.destinations.factory import SMS_OPT_OUTS_FILE
from loyalty_cdp.adapters.erased_liability import ErasedLiability, ErasedLine
from loyalty_cdp.adapters.eventlog.base import EventLog
from loyalty_cdp.adapters.privacy_requests import PrivacyRequest, PrivacyRequestStore
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT, BUSY_TIMEOUT_S
from loyalty_cdp.adapters.suppression import SuppressionList, identifier_digest, load_or_create_secret
from loyalty_cdp.core.consent import (
    PROFILING,
    SALE_SHARING,
    STRICT_POLICY,
    ConsentUpdate,
    DefaultPolicy,
    allowed,
    consent_from_builtins,
    consent_update_call,
    consent_view,
    parse_consent_update,
)
from loyalty_cdp.core.events import Event, format_time, normalise
from loyalty_cdp.core.identifiers import ANONYMOUS_ID, EMAIL, PHONE, USER_ID, identifier_key
from loyalty_cdp.core.identity import canonical_id
from loyalty_cdp.core.loyalty import liability_report
from loyalty_cdp.core.privacy import (
    ACCESS,
    ADMT_ACCESS,
    COMPLETED,
    CORRECTION,
    ERASURE,
    FAILED,
    IN_PROGRESS,
    OPT_OUT_ADMT,
    OPT_OUT_SALE,
    parse_request,
)
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.errors import Conflict, LoyaltyCdpError, NotFound, StorageUnavailable
from loyalty_cdp.services.loyalty_stage import loyalty_state
from loyalty_cdp.services.privacy_export import access_export, admt_account, consent_state, merged_member_ids

if TYPE_CHECKING:
    from loyalty_cdp.bootstrap import Components
    from loyalty_cdp.services.activation import Activation
    from loyalty_cdp.services.member_answers import MemberAnswers
    from loyalty_cdp.services.processor import Processor

DEFAULT_REGION = "US"
FOLD_WAIT_S = 10.0  # a written consent or correction must be folded within this, or the request fails (re-runnable)
DRAIN_WAIT_S = 2.0  # how long an erasure waits for ingest requests accepted before the suppression
ERASE_ATTEMPTS = 5  # a merge may rename the member between resolving and erasing it: resolve again
CHECKPOINT_ATTEMPTS = 50  # a truncating checkpoint waits for readers to finish their snapshot (20 ms apart)
CLI_ACTOR = "cli"
PRIVACY_SOURCE = "privacy_request"
EXPORTABLE = (ACCESS, ADMT_ACCESS)

Append = Callable[[Sequence[Event]], Awaitable[None]]


@dataclass
class PrivacyContext:
    """The stores a request touches: the server's components, or the CLI's own over a data directory.

    ``append`` stores new events durably (the server's group commit; offline, the log and a
    processor catch-up); ``in_flight`` counts events accepted by ingest but not appended yet.
    ``activation`` holds the decision store, the outbox, the SMS STOP list and the audience
    exports (None: a context without them, whose access export says so). ``answers`` is the
    server's cache of member answers, which an erasure empties of the person.
    """

    data_dir: Path
    processor: Processor
    event_log: EventLog
    scores: ScoreStore
    suppression: SuppressionList
    requests: PrivacyRequestStore
    audit: AuditLog
    append: Append
    in_flight: Callable[[], int] = field(default=lambda: 0)
    activation: Activation | None = None
    answers: MemberAnswers | None = None

    @classmethod
    def of(cls, components: Components) -> PrivacyContext:
        return cls(components.settings.data_dir, components.processor, components.event_log, components.scores,
                   components.suppression, components.privacy_requests, components.audit,
                   components.appender.submit, lambda: components.appender.queued_events, components.activation,
                   components.answers)


def _identifiers(identities: Mapping[str, list[str]]) -> set[tuple[str, str]]:
    return {(kind, value) for kind, values in identities.items() for value in values}


def member_ids_of(identifiers: Iterable[tuple[str, str]]) -> set[str]:
    """Every member id the identifiers may have been filed under (a user's, or an anonymous member's)."""
    return {canonical_id({kind: [value]}) for kind, value in identifiers}


def profiling_refused(consents: Iterable[tuple[str, Mapping[str, Any]]], policy: DefaultPolicy) -> set[str]:
    """Member ids whose ``Profile.consent`` (or the policy's default) refuses profiling: the scoring
    job's ``opted_out``."""
    return {member_id for member_id, consent in consents
            if not allowed(consent_from_builtins(consent), PROFILING, policy)}


def _checkpoint(db: sqlite3.Connection, path: Path) -> None:
    """Copy the WAL into the file and cut it to zero bytes, waiting (bounded) for readers' snapshots."""
    for _ in range(CHECKPOINT_ATTEMPTS):
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        time.sleep(0.02)
    raise StorageUnavailable(f"{path}: a reader keeps the WAL from being truncated; run the erasure again")


def _holds_any(path: Path, needles: Iterable[bytes]) -> bool:
    """Whether any of ``needles`` occurs in the file's bytes (its free pages included)."""
    with path.open("rb") as file:
        if path.stat().st_size == 0:
            return False
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return any(data.find(needle) >= 0 for needle in needles if needle)


def scrub_sqlite(path: Path, needles: Iterable[bytes], *, vacuum: bool = False) -> bool:
    """Leave no copy of deleted rows in a SQLite file: truncate its WAL, then ``VACUUM`` (and truncate
    again) when asked to or when one of ``needles`` is still in its bytes. Returns whether it vacuumed.

    ``secure_delete`` zeroes what the erasure deletes; rows other connections deleted earlier
    without it (a sent message leaving the outbox queue) stay in free pages until a vacuum
    rewrites the file. A needle that is part of another member's data (a short user id) only
    costs a vacuum that was not needed."""
    if not path.exists():
        return False
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            db.execute(BUSY_TIMEOUT)
            _checkpoint(db, path)
            vacuum = vacuum or _holds_any(path, needles)
            if vacuum:
                db.execute("VACUUM")
                _checkpoint(db, path)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"{path}: {exc}") from exc
    return vacuum


def _truncate_wal(path: Path) -> None:
    """Copy a SQLite file's WAL into it and cut the WAL to zero bytes, so deleted rows leave no copy there."""
    if not path.exists():
        return
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"{path}: {exc}") from exc
    finally:
        db.close()
    if busy:
        raise StorageUnavailable(f"{path}: a reader keeps the WAL from being truncated; run the erasure again")


class PrivacyService:
    def __init__(self, context: PrivacyContext) -> None:
        self.c = context

    # -- requests ---------------------------------------------------------------------------

    async def submit(self, body: Any, *, actor: str, request_key: str | None = None) -> tuple[PrivacyRequest, bool]:
        """Validate, store and run a request; answers it (as it ended) and whether it is new.

        The same ``request_key`` answers the stored request, running it again if it failed.
        """
        spec = parse_request(body, DEFAULT_REGION)
        request, new = await asyncio.to_thread(self.c.requests.create, spec, actor=actor, request_key=request_key)
        if new:
            await self._audit(actor, f"privacy.{request.type}.received", request.request_id,
                              {"identifier_type": request.identifier_type, "regime": request.regime})
        if new or request.status == FAILED:
            request = await self._run(request, actor)
        return request, new

    def get(self, request_id: str) -> PrivacyRequest:
        return self.c.requests.get(request_id)

    def export(self, request_id: str, now_ms: int | None = None) -> dict[str, Any]:
        """The answer of a completed access or ADMT access request, built now from the live stores."""
        request = self.c.requests.get(request_id)
        if request.type not in EXPORTABLE:
            raise NotFound(f"a {request.type} request has no export; only {' and '.join(EXPORTABLE)} requests do")
        if request.status != COMPLETED:
            raise Conflict(f"the request is {request.status}; its export is ready once it is completed")
        now = now_ms if now_ms is not None else _now()
        profile = self._profile(request)
        build = access_export if request.type == ACCESS else admt_account
        return build(self.c, request, profile, now)

    async def _run(self, request: PrivacyRequest, actor: str) -> PrivacyRequest:
        """Serve a stored request; a failure marks it ``failed`` and names it in the error's details."""
        request_id = request.request_id
        await asyncio.to_thread(self.c.requests.update_status, request_id, IN_PROGRESS)
        started = time.perf_counter()
        try:
            result = await self._serve(request, actor)
        except Exception as exc:
            reason = (str(exc) if isinstance(exc, LoyaltyCdpError) else f"internal error ({type(exc).__name__})")[:500]
            await asyncio.to_thread(self.c.requests.update_status, request_id, FAILED, reason=reason)
            await self._audit(actor, f"privacy.{request.type}.failed", request_id, {"reason": reason})
            if isinstance(exc, LoyaltyCdpError):
                exc.details = {**(exc.details or {}), "request_id": request_id, "status": FAILED}
            raise
        result["seconds"] = round(time.perf_counter() - started, 4)
        done = await asyncio.to_thread(self.c.requests.update_status, request_id, COMPLETED, result=result)
        await self._audit(actor, f"privacy.{request.type}.completed", request_id, result)
        return done

    async def _audit(self, actor: str, action: str, subject: str, details: dict[str, Any]) -> None:
        await asyncio.to_thread(self.c.audit.append, actor, action, subject, details)

    async def _serve(self, request: PrivacyRequest, actor: str) -> dict[str, Any]:
        if request.type == ERASURE:
            return await self._erase(request)
        if request.type in (OPT_OUT_SALE, OPT_OUT_ADMT):
            return await self._opt_out(request, actor, SALE_SHARING if request.type == OPT_OUT_SALE else PROFILING)
        if request.type == CORRECTION:
            return await self._correct(request)
        profile = self._profile(request)
        build = access_export if request.type == ACCESS else admt_account
        answer = await asyncio.to_thread(build, self.c, request, profile, _now())
        result: dict[str, Any] = {"member_found": profile is not None,
                                  "export": f"/v1/privacy/requests/{request.request_id}/export"}
        if request.type == ACCESS and profile is not None:
            result |= {"events": len(answer["events"]), "identities": len(_identifiers(profile.identities))}
        if request.type == ADMT_ACCESS:
            result |= {"scores": len(answer.get("scores", [])), "decisions": len(answer.get("decisions", []))}
        return result

    # -- the subject ------------------------------------------------------------------------

    def _identifier(self, request: PrivacyRequest) -> tuple[str, str]:
        if request.identifier_value is None:
            raise Conflict("the request's identifier was redacted by an erasure of the person; nothing is held")
        return request.identifier_type, request.identifier_value

    def _profile(self, request: PrivacyRequest) -> Profile | None:
        view = self.c.processor.view
        member_id = view.find(*self._identifier(request))
        return None if member_id is None else view.profile(member_id)

    # -- erasure ----------------------------------------------------------------------------

    async def _erase(self, request: PrivacyRequest) -> dict[str, Any]:
        started = time.perf_counter()
        kind, value = self._identifier(request)
        profile = self._profile(request)
        identifiers = {(kind, value)} | (set() if profile is None else _identifiers(profile.identities))
        await asyncio.to_thread(self.c.suppression.add, identifiers)
        suppressed = time.perf_counter()
        await self._drain()
        events = scores = 0
        erased = False
        member_ids: set[str] = set()
        traces: set[str] = set()  # contact values messages may hold beyond the identifiers (trait forms, push token)
        segments: set[str] = set()
        liability = ErasedLiability(self.c.data_dir)
        try:
            for _ in range(ERASE_ATTEMPTS):
                member_id = self.c.processor.view.find(kind, value)
                profile = None if member_id is None else self.c.processor.view.profile(member_id)
                if member_id is None or profile is None:
                    break
                extra = _identifiers(profile.identities) - identifiers
                if extra:  # linked since we looked: suppress them too before anything is deleted
                    await asyncio.to_thread(self.c.suppression.add, extra)
                    identifiers |= extra
                self._hold_liability(liability, request.request_id, profile)
                member_ids |= {member_id} | merged_member_ids(self.c.processor.history_of(member_id))
                traces |= _contact_traces(profile)
                segments |= set(profile.segments)
                scores += await asyncio.to_thread(self._delete_scores, member_ids_of(identifiers) | {member_id})
                events = len(await asyncio.to_thread(
                    self.c.event_log.read_member, profile.identities.get(USER_ID, []),
                    profile.identities.get(ANONYMOUS_ID, [])))
                member = await asyncio.to_thread(self.c.processor.erase_member, member_id)
                if self.c.answers is not None:
                    self.c.answers.forget(member_ids)
                if member is not None:
                    erased = True
                    identifiers |= _identifiers(member.identities)
                    break
            else:
                raise StorageUnavailable("the member kept being renamed by merges; run the erasure again")
            activation = await self._erase_activation(request.request_id, identifiers,
                                                      member_ids | member_ids_of(identifiers), traces, segments)
            redacted = await asyncio.to_thread(self.c.requests.redact, identifiers, request.request_id)
            line = await asyncio.to_thread(liability.settle, request.request_id)
        finally:
            liability.close()
        return {
            "member_found": erased,
            "identifiers_suppressed": len(identifiers),
            "events_deleted": events,
            "scores_deleted": scores,
            "requests_redacted": redacted,
            "liability_points_anonymised": 0 if line is None else line.outstanding_points,
            **activation,
            "suppressed_in_s": round(suppressed - started, 4),
            "purged_in_s": round(time.perf_counter() - suppressed, 4),
        }

    async def _erase_activation(self, request_id: str, identifiers: set[tuple[str, str]], member_ids: set[str],
                                traces: set[str], segments: set[str]) -> dict[str, Any]:
        """Step 7: the decision store, the outbox and the activation tables, the SMS STOP list, the
        audience files, and the deletion requests to the destinations that take them."""
        activation = self.c.activation
        if activation is None:
            return {}
        user_ids = {value for kind, value in identifiers if kind == USER_ID}
        emails = {value for kind, value in identifiers if kind == EMAIL}
        phones = {value for kind, value in identifiers if kind == PHONE}
        member_ids = member_ids | await asyncio.to_thread(activation.person_member_ids, user_ids)
        held = await asyncio.to_thread(activation.person_segments, member_ids)
        segments = segments | {row["segment_id"] for part in held.values() for row in part}
        counts = await asyncio.to_thread(activation.erase_person, member_ids, user_ids, phones)
        needles = {value.encode() for _, value in identifiers} | {trace.encode() for trace in traces}
        vacuumed = await asyncio.to_thread(scrub_sqlite, activation.outbox.path, needles)
        if phones:
            await asyncio.to_thread(scrub_sqlite, self.c.data_dir / SMS_OPT_OUTS_FILE, (), vacuum=True)
        audience_rows = await asyncio.to_thread(activation.erase_from_audiences, segments, emails, phones)
        notified = await activation.notify_erasure(request_id, user_ids)
        return {
            "decisions_deleted": counts["decisions"],
            "decision_store_rows_deleted": counts["decision_store_rows"],
            "sent_rows_deleted": counts["sent_rows"],
            "status_events_deleted": counts["status_events"],
            "sms_opt_outs_deleted": counts["sms_opt_outs"],
            "outbox_vacuumed": vacuumed,
            "audience_rows_deleted": audience_rows,
            "destinations_notified": notified,
        }

    async def _drain(self) -> None:
        """Wait (bounded) until ingest has appended what it accepted before the suppression."""
        deadline = time.monotonic() + DRAIN_WAIT_S
        while self.c.in_flight() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.002)

    def _hold_liability(self, liability: ErasedLiability, request_id: str, profile: Profile) -> None:
        stage = self.c.processor.loyalty
        state = loyalty_state(profile)
        if stage is None or state is None:
            return
        report = liability_report(stage.engine.book, [state], _now())
        liability.hold(request_id, ErasedLine.of(report))

    def _delete_scores(self, member_ids: Collection[str]) -> int:
        """Delete the member's rows from the live and every back-test score store, and truncate their WALs."""
        deleted = self.c.scores.delete_members(member_ids)
        _truncate_wal(self.c.scores.path)
        for path in sorted((self.c.data_dir / "backtests").glob("*/scores.db")):
            store = ScoreStore(path.parent)
            try:
                deleted += store.delete_members(member_ids)
            finally:
                store.close()
            _truncate_wal(path)
        return deleted

    # -- consent: opt-outs and the consent API ----------------------------------------------

    async def _opt_out(self, request: PrivacyRequest, actor: str, purpose: str) -> dict[str, Any]:
        kind, value = self._identifier(request)
        profile = self._profile(request)
        user_id, anonymous_id = _address(profile, kind, value)
        if self.c.suppression.is_suppressed(kind, value):
            return {"member_found": False, "recorded": False, "note": "the person was erased: nothing is processed"}
        if user_id is None and anonymous_id is None:
            return {"member_found": False, "recorded": False}
        message_id = f"privacy-{request.request_id}"
        update = ConsentUpdate(purpose, False, PRIVACY_SOURCE)
        await self._write_consent(update, actor, message_id, user_id, anonymous_id)
        result: dict[str, Any] = {"member_found": profile is not None, "purpose": purpose, "recorded": True,
                                  "message_id": message_id}
        if purpose == PROFILING and profile is not None:  # no propensity score may be used from now on
            ids = member_ids_of(_identifiers(profile.identities)) | {profile.member_id}
            result["scores_deleted"] = await asyncio.to_thread(self._delete_scores, ids)
        if purpose == SALE_SHARING and profile is not None and self.c.activation is not None:
            # Out of the retail-media audience files now, not at the next export (which leaves them out too).
            activation = self.c.activation
            ids = member_ids_of(_identifiers(profile.identities)) | {profile.member_id}
            held = await asyncio.to_thread(activation.person_segments, ids)
            segments = {row["segment_id"] for part in held.values() for row in part}
            result["audience_rows_deleted"] = await asyncio.to_thread(
                activation.erase_from_audiences, segments, set(profile.identities.get(EMAIL, ())),
                set(profile.identities.get(PHONE, ())))
        return result

    async def record_consent(self, user_id: str, body: Any, *, actor: str,
                             request_key: str | None = None) -> dict[str, Any]:
        """``POST /v1/members/{user_id}/consent``: record an explicit consent change and answer the member's consent."""
        update = parse_consent_update(body)
        if self.c.processor.view.find(USER_ID, user_id) is None or self.c.suppression.is_suppressed(USER_ID, user_id):
            raise NotFound(f"no member with user_id {user_id!r}")
        if request_key:
            message_id = "consent-" + hashlib.sha256(f"{user_id}|{request_key}".encode()).hexdigest()[:40]
        else:
            message_id = f"consent-{uuid.uuid4()}"
        profile = await self._write_consent(update, actor, message_id, user_id, None)
        digest = identifier_digest(load_or_create_secret(self.c.data_dir), identifier_key(USER_ID, user_id))
        await self._audit(actor, "consent.updated", person_subject(digest),
                          {"purpose": update.purpose, "granted": update.granted, "source": update.source})
        return {"user_id": user_id, "purpose": update.purpose, "granted": update.granted, "source": update.source,
                "message_id": message_id, "policy": STRICT_POLICY.name,
                "consent": consent_view(consent_state(profile), STRICT_POLICY)}

    async def _write_consent(self, update: ConsentUpdate, actor: str, message_id: str, user_id: str | None,
                             anonymous_id: str | None) -> Profile:
        """Append the consent record (unless this message id holds it already) and wait until it is folded."""

        def recorded(profile: Profile) -> bool:
            held = _consent_record(profile, message_id)
            if held is not None and held != (update.purpose, update.granted):
                raise Conflict("the Idempotency-Key was already used for a different consent change")
            return held is not None

        view = self.c.processor.view
        kind, value = (USER_ID, user_id) if user_id is not None else (ANONYMOUS_ID, anonymous_id)
        member_id = None if value is None else view.find(kind, value)
        profile = None if member_id is None else view.profile(member_id)
        if profile is not None and recorded(profile):
            return profile
        now = _now()
        call = consent_update_call(update, actor=actor, at_ms=now, message_id=message_id, user_id=user_id,
                                   anonymous_id=anonymous_id)
        await self._append(call, now)
        return await self._folded(user_id, anonymous_id, recorded)

    # -- correction -------------------------------------------------------------------------

    async def _correct(self, request: PrivacyRequest) -> dict[str, Any]:
        kind, value = self._identifier(request)
        corrections = request.corrections or {}
        profile = self._profile(request)
        if profile is None or self.c.suppression.is_suppressed(kind, value):
            return {"member_found": False, "corrected": []}
        user_id, anonymous_id = _address(profile, kind, value)
        now = _now()
        message_id = f"privacy-{request.request_id}"
        call: dict[str, Any] = {"type": "identify", "messageId": message_id, "timestamp": format_time(now),
                                "traits": dict(corrections), "context": {"source": PRIVACY_SOURCE}}
        call |= {"userId": user_id} if user_id is not None else {"anonymousId": anonymous_id}
        await self._append(call, now)

        def applied(folded: Profile) -> bool:
            traits = folded.traits
            return all(name in traits and (traits[name].message_id == message_id or traits[name].updated_at > now)
                       for name in corrections)

        await self._folded(user_id, anonymous_id, applied)
        return {"member_found": True, "corrected": sorted(corrections), "message_id": message_id}

    # -- writing through the log ------------------------------------------------------------

    async def _append(self, call: dict[str, Any], now: int) -> None:
        await self.c.append([normalise(call, call_type=None, received_at=now, default_message_id=call["messageId"])])

    async def _folded(self, user_id: str | None, anonymous_id: str | None,
                      done: Callable[[Profile], bool]) -> Profile:
        """Wait until the processor has folded what was appended into the member's profile."""
        view = self.c.processor.view
        kind, value = (USER_ID, user_id) if user_id is not None else (ANONYMOUS_ID, anonymous_id)
        assert value is not None, "every written call carries a user id or an anonymous id"
        deadline = time.monotonic() + FOLD_WAIT_S
        while True:
            member_id = view.find(kind, value)
            profile = None if member_id is None else view.profile(member_id)
            if profile is not None and done(profile):
                return profile
            if time.monotonic() > deadline:
                raise StorageUnavailable("the change is stored but not applied yet; repeat the request to finish it")
            await asyncio.sleep(0.005)


def _consent_record(profile: Profile, message_id: str) -> tuple[str, bool] | None:
    """The (purpose, granted) the explicit consent record ``message_id`` holds in the profile, if folded."""
    for purpose, held in consent_state(profile).purposes.items():
        for record in held.history:
            if record.message_id == message_id:
                return purpose, record.granted
    return None


def _contact_traces(profile: Profile) -> set[str]:
    """The contact values a message to the member may hold that are not identifiers as stored:
    the email and phone traits as sent, their normalised forms, the push token."""
    from loyalty_cdp.services.activation import email_address, phone_number, push_token

    found = {email_address(profile), phone_number(profile), push_token(profile)}
    for name in ("email", "phone"):
        trait = profile.traits.get(name)
        if trait is not None and isinstance(trait.value, str):
            found.add(trait.value)
    return {value for value in found if value}


def _address(profile: Profile | None, kind: str, value: str) -> tuple[str | None, str | None]:
    """The user id (else anonymous id) to address a written call to: the member's, or the identifier's own."""
    if profile is not None:
        if profile.user_id is not None:
            return profile.user_id, None
        anonymous = profile.identities.get(ANONYMOUS_ID)
        return None, anonymous[0] if anonymous else None
    if kind == USER_ID:
        return value, None
    if kind == ANONYMOUS_ID:
        return None, value
    return None, None


def _now() -> int:
    return int(time.time() * 1000)
