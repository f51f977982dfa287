"""The words the program's data is written in: one typed vocabulary for models, services, CLI
and reports."""

from __future__ import annotations

from enum import StrEnum


class CollectorStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ON_HOLD = "ON_HOLD"
    CLOSED = "CLOSED"
