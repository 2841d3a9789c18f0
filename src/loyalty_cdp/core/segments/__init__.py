"""Segments: declarative conditions over the member profile, evaluated per member in real time
and over all members at once with NumPy, with Segment Entered/Exited events (``docs/segments.md``)."""

from loyalty_cdp.core.segments.batch import MemberTable
from loyalty_cdp.core.segments.conditions import Condition, parse_condition, time_dependent
from loyalty_cdp.core.segments.counts import CountSpec, EventWindows, WindowPlan, window_count
from loyalty_cdp.core.segments.evaluate import holds
from loyalty_cdp.core.segments.facts import MemberFacts, allowed_consents, member_segments
from loyalty_cdp.core.segments.fields import FieldCatalog, FieldPath
from loyalty_cdp.core.segments.loyalty import LoyaltyReader, loyalty_keys
from loyalty_cdp.core.segments.membership import (
    SEGMENT_ENTERED,
    SEGMENT_EXITED,
    MembershipUpdate,
    SegmentDefinition,
    SegmentSet,
    apply_memberships,
    parse_segment,
    parse_segments,
    update_memberships,
)
from loyalty_cdp.core.segments.preview import SizeEstimate, estimate_size, in_sample

__all__ = [
    "SEGMENT_ENTERED",
    "SEGMENT_EXITED",
    "Condition",
    "CountSpec",
    "EventWindows",
    "FieldCatalog",
    "FieldPath",
    "LoyaltyReader",
    "MemberFacts",
    "MemberTable",
    "MembershipUpdate",
    "SegmentDefinition",
    "SegmentSet",
    "SizeEstimate",
    "WindowPlan",
    "allowed_consents",
    "apply_memberships",
    "estimate_size",
    "holds",
    "in_sample",
    "loyalty_keys",
    "member_segments",
    "parse_condition",
    "parse_segment",
    "parse_segments",
    "time_dependent",
    "update_memberships",
    "window_count",
]
