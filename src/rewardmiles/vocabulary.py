"""The words the program's data is written in: one typed vocabulary for models, services, CLI
and reports."""

from __future__ import annotations

from enum import StrEnum


class CollectorStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ON_HOLD = "ON_HOLD"
    CLOSED = "CLOSED"


class OperatorRole(StrEnum):
    """What an operator (or an admin token) may do, each role everything the one before may:
    viewer reads; agent also changes collectors and pending lines; admin also manages the
    catalogue, partners and operators."""

    VIEWER = "viewer"
    AGENT = "agent"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_RANKS[self]

    def includes(self, other: OperatorRole) -> bool:
        """This role may do what `other` may."""
        return self.rank >= other.rank


_ROLE_RANKS = {OperatorRole.VIEWER: 0, OperatorRole.AGENT: 1, OperatorRole.ADMIN: 2}


class OperatorStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
