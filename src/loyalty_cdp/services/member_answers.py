"""The member profile as the API answers it, with the part that changes only with the profile kept.

An answer (``GET /v1/members/{user_id}``, ``GET /v1/members/lookup``) is the profile's fields
plus its loyalty summary, signals and scores as of the moment of the read. Most of it changes
only when the processor publishes a new version of the profile (or a new score row is
written): identities, traits, segments, consent, and the signals that do not depend on time
(spend, affinities, channel mix, wishlist: :class:`~loyalty_cdp.core.signals.PreparedSignals`).
The rest (the loyalty summary, recency, counts within windows, lifecycle) depends on the time.

:class:`MemberAnswers` keeps, for the ``size`` members answered most recently, the decoded profile
and the first part already encoded as JSON (``msgspec.Raw``), keyed by the encoded profile and
the score row it was made from; a read compares those two (a ``bytes`` comparison and a tuple
comparison) and computes only the time-dependent part. The bytes are exactly those of rendering
the whole profile afresh (tested). A member not in the cache costs what it cost before, plus
encoding its parts once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from loyalty_cdp.adapters.scorestore import scores_of
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.loyalty import loyalty_summary
from loyalty_cdp.core.loyalty.state import LoyaltyState
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.signals import PreparedSignals, prepare_signals, signals_at
from loyalty_cdp.services.loyalty_stage import loyalty_state

if TYPE_CHECKING:
    from loyalty_cdp.adapters.scorestore import ScoreStore
    from loyalty_cdp.services.processor import Processor

ANSWERS_KEPT = 1_024  # members whose time-independent part is kept (about 20-40 KB each with the profile)
LOYALTY_DEFAULTS: dict[str, Any] = {
    "points_balance": 0, "pending_points": 0, "lifetime_points": 0, "tier": None,
}

_encode = msgspec.json.Encoder().encode  # what json_response encodes with
_decode_profile = msgspec.msgpack.Decoder(Profile).decode


def _raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(_encode(value))


class _Kept(msgspec.Struct):
    """One member's time-independent part, and what it was made from."""

    blob: bytes
    score_row: tuple[Any, ...] | None
    profile: Profile
    state: LoyaltyState | None
    identities: msgspec.Raw
    traits: msgspec.Raw
    traits_updated_at: msgspec.Raw
    signals: PreparedSignals  # every field but browse_weight is Raw
    scores: msgspec.Raw
    segments: msgspec.Raw
    consent: msgspec.Raw


class MemberAnswers:
    """Renders members as the API answers them, keeping each recent member's unchanging part."""

    def __init__(self, processor: Processor, scores: ScoreStore, size: int = ANSWERS_KEPT) -> None:
        self._processor = processor
        self._scores = scores
        self._size = size
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._lock = threading.Lock()  # the routes also answer from worker threads

    def __len__(self) -> int:
        return len(self._kept)

    def forget(self, member_ids: Iterable[str]) -> None:
        """Drop what is kept of these members (an erasure: nothing of theirs stays in memory)."""
        with self._lock:
            for member_id in member_ids:
                self._kept.pop(member_id, None)

    def answer(self, member_id: str, as_of: int) -> bytes | None:
        """The member's answer as of ``as_of`` (epoch ms), encoded; None for an unknown member."""
        self._processor.reading()  # the processor's steps shorten while members are read
        blob = self._processor.view.profiles.get(member_id)
        if blob is None:  # unknown, or erased (an answer made while the erasure ran may have been kept)
            self.forget([member_id])
            return None
        score_row = self._scores.row(member_id)
        with self._lock:
            kept = self._kept.get(member_id)
            if kept is not None:
                self._kept.move_to_end(member_id)
        if kept is None or kept.blob != blob or kept.score_row != score_row:
            kept = self._keep(member_id, blob, score_row)
        profile = kept.profile
        return _encode({
            "user_id": profile.user_id,
            "member_id": profile.member_id,
            "identities": kept.identities,
            "loyalty": self._loyalty(kept.state, as_of),
            "traits": kept.traits,
            "traits_updated_at": kept.traits_updated_at,
            "signals": signals_at(profile, kept.signals, as_of),
            "scores": kept.scores,
            "segments": kept.segments,
            "consent": kept.consent,
        })

    def _loyalty(self, state: LoyaltyState | None, as_of: int) -> dict[str, Any]:
        stage = self._processor.loyalty
        if stage is None or state is None:  # no program, or not enrolled (anonymous)
            return dict(LOYALTY_DEFAULTS)
        return loyalty_summary(stage.engine.book, state, as_of)

    def _keep(self, member_id: str, blob: bytes, score_row: tuple[Any, ...] | None) -> _Kept:
        profile = _decode_profile(blob)
        prepared = prepare_signals(profile)
        signals = msgspec.structs.replace(prepared, **{
            field: _raw(getattr(prepared, field)) for field in prepared.__struct_fields__ if field != "browse_weight"
        })
        kept = _Kept(
            blob=blob, score_row=score_row, profile=profile, state=loyalty_state(profile),
            identities=_raw(profile.identities),
            traits=_raw({key: trait.value for key, trait in profile.traits.items()}),
            traits_updated_at=_raw({key: format_time(trait.updated_at) for key, trait in profile.traits.items()}),
            signals=signals,
            scores=_raw(profile.scores if score_row is None else scores_of(score_row)),
            segments=_raw(profile.segments),
            consent=_raw(profile.consent),
        )
        with self._lock:
            self._kept[member_id] = kept
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return kept
