"""What conditions read about one member at one instant: :class:`MemberFacts`.

Built from the profile, the instant ``as_of`` (epoch ms, passed in: nothing here reads a
clock) and, when segments count events the profile does not keep, the member's
:class:`~loyalty_cdp.core.segments.counts.EventWindows`. Signals are computed once, on the
first read that needs them. Consent is read the way the privacy part records it
(:mod:`loyalty_cdp.core.consent`): a purpose is allowed when the member's latest record
grants it, or, without a record, when the regime's default policy does. Every value read is
remembered in ``accessed`` so a decision can show exactly which inputs it used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from loyalty_cdp.core.consent import (
    PROFILING,
    STRICT_POLICY,
    ConsentState,
    DefaultPolicy,
    allowed_purposes,
    consent_from_builtins,
)
from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.segments.counts import CountSpec, EventWindows, window_count
from loyalty_cdp.core.segments.fields import FieldPath, aggregate, resolve
from loyalty_cdp.core.signals import SignalSettings, compute_signals


def allowed_consents(consent: dict[str, Any], policy: DefaultPolicy) -> dict[str, bool]:
    """Whether each purpose is allowed for a profile's ``consent`` object under ``policy``.

    An object the privacy fold did not write reads as "nothing recorded", so only the
    policy's defaults apply (under the strict policy: nothing is allowed)."""
    try:
        state = consent_from_builtins(consent)
    except msgspec.ValidationError:
        state = ConsentState()
    return allowed_purposes(state, policy)


def member_segments(profile: Profile) -> list[str]:
    """The ids of the segments the profile is in (from ``profile.segments``), sorted."""
    return sorted(key for key, state in profile.segments.items() if isinstance(state, dict) and state.get("member"))


class MemberFacts:
    """One member as of ``as_of``, as conditions, triggers and offers read it.

    ``consent_policy`` is the default policy of the member's regime (``policy_for("gdpr")``,
    ``policy_for("ccpa")``; the strict policy when unknown). ``automated`` False (by default:
    the ``profiling`` purpose, which covers automated decision-making, is not allowed) hides
    the ``scores`` namespace, so nothing computed by a model can influence what they get.
    ``event`` is the triggering event, read by ``event.*`` paths. ``scores`` are the member's
    scores when they are kept beside the profile (the score store), else ``profile.scores``.
    ``loyalty`` is the member's loyalty object (``loyalty_summary`` at ``as_of``), or a
    function computing it when first read (see
    :class:`~loyalty_cdp.core.segments.loyalty.LoyaltyReader`); by default ``profile.loyalty``.
    """

    __slots__ = ("_allowed", "_automated", "_loyalty", "_signals", "_traits", "accessed", "as_of", "consent_policy",
                 "event", "profile", "scores", "segment_ids", "settings", "windows")

    def __init__(
        self,
        profile: Profile,
        as_of: int,
        *,
        windows: EventWindows | None = None,
        signals: dict[str, Any] | None = None,
        settings: SignalSettings | None = None,
        event: DecodedEvent | None = None,
        automated: bool | None = None,
        segment_ids: Iterable[str] | None = None,
        consent_policy: DefaultPolicy | None = None,
        scores: dict[str, Any] | None = None,
        loyalty: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.profile = profile
        self.scores = profile.scores if scores is None else scores
        self._loyalty = profile.loyalty if loyalty is None else loyalty
        self.as_of = as_of
        self.windows = windows
        self.settings = settings
        self.event = event
        self.consent_policy = consent_policy or STRICT_POLICY
        self._automated = automated
        self._allowed: dict[str, bool] | None = None
        self.segment_ids = sorted(segment_ids) if segment_ids is not None else member_segments(profile)
        self._signals = signals
        self._traits: dict[str, Any] | None = None
        self.accessed: dict[str, Any] = {}

    @property
    def member_id(self) -> str:
        return self.profile.member_id

    @property
    def allowed(self) -> dict[str, bool]:
        """Whether each consent purpose is allowed (the latest record, else the policy's default)."""
        if self._allowed is None:
            self._allowed = allowed_consents(self.profile.consent, self.consent_policy)
        return self._allowed

    @property
    def automated(self) -> bool:
        """Whether automated decision-making (scores, predictions) may be used for this member."""
        if self._automated is None:
            self._automated = self.allowed[PROFILING]
        return self._automated

    @property
    def loyalty(self) -> dict[str, Any]:
        if callable(self._loyalty):
            self._loyalty = self._loyalty()
        return self._loyalty

    @property
    def signals(self) -> dict[str, Any]:
        if self._signals is None:
            self._signals = compute_signals(self.profile, self.as_of, self.settings)
        return self._signals

    @property
    def traits(self) -> dict[str, Any]:
        if self._traits is None:
            self._traits = {key: trait.value for key, trait in self.profile.traits.items()}
        return self._traits

    def with_event(self, event: DecodedEvent | None) -> MemberFacts:
        """The same facts with another triggering event (signals are shared, not recomputed)."""
        other = MemberFacts(self.profile, self.as_of, windows=self.windows, signals=self._signals,
                            settings=self.settings, event=event, automated=self._automated,
                            segment_ids=self.segment_ids, consent_policy=self.consent_policy, scores=self.scores,
                            loyalty=self._loyalty)
        other._traits = self._traits
        other._allowed = self._allowed
        return other

    def with_segments(self, profile: Profile) -> MemberFacts:
        """The same facts for ``profile``: the same member, its segment memberships moved (signals,
        loyalty and scores are shared, not recomputed)."""
        other = MemberFacts(profile, self.as_of, windows=self.windows, signals=self._signals,
                            settings=self.settings, event=self.event, automated=self._automated,
                            consent_policy=self.consent_policy, scores=self.scores, loyalty=self._loyalty)
        other._traits = self._traits
        other._allowed = self._allowed
        return other

    def _root(self, namespace: str) -> Any:
        if namespace == "signals":
            return self.signals
        if namespace == "traits":
            return self.traits
        if namespace == "loyalty":
            return self.loyalty
        if namespace == "scores":
            return self.scores if self.automated else None
        if namespace == "event":
            return self.event.properties if self.event is not None else None
        if namespace == "segments":
            return self.segment_ids
        return None

    def value(self, path: FieldPath) -> Any:
        """The member's value at ``path`` (None when absent), remembered in ``accessed``."""
        if path.namespace == "consent":
            found: Any = self.allowed.get(path.keys[0]) if len(path.keys) == 1 else None
        else:
            found = resolve(self._root(path.namespace), path.keys)
        if path.aggregate is not None:
            found = aggregate(found, path.aggregate)
        self.accessed[path.text] = found
        return found

    def count(self, spec: CountSpec) -> int | None:
        """Events ``spec`` counts at ``as_of`` (None when no state keeps them)."""
        found = window_count(spec, self.profile, self.windows, self.as_of)
        self.accessed[f"count({spec.key}, {spec.days}d)"] = found
        return found
