"""Campaign budgets: points an earn rule may grant across all members, first come first served.

A campaign budget is the one piece of loyalty state shared between members, so it lives
outside the member state, in a book the caller owns and persists. Grants are keyed by
cause (member and order), which makes them idempotent: replaying a member's history
asks again for the same keys and gets the same grants, never a second helping.
"""

from __future__ import annotations

import msgspec


class CampaignBudgets(msgspec.Struct):
    spent: dict[str, int] = {}
    grants: dict[str, int] = {}

    def grant(self, rule_id: str, total: int, key: str, requested: int) -> int:
        """Grant up to ``requested`` points of rule ``rule_id`` (budget ``total``) for ``key``."""
        grant_key = f"{rule_id}\x1f{key}"
        previous = self.grants.get(grant_key, 0)
        others = self.spent.get(rule_id, 0) - previous
        granted = max(0, min(requested, total - others))
        self.spent[rule_id] = others + granted
        if granted:
            self.grants[grant_key] = granted
        else:
            self.grants.pop(grant_key, None)
        return granted

    def remaining(self, rule_id: str, total: int) -> int:
        return max(total - self.spent.get(rule_id, 0), 0)
