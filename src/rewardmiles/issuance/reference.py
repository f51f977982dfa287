"""The reference-data cache of the issuance path.

Sponsors, offers and locations change rarely and are read by every request. Each process keeps
them per database in a `ReferenceCache` tagged with the `reference_version` counter (bumped by
triggers on every change to those tables, migration 0005). The issuance path reads the counter in
its first statement anyway (`idempotency.claim`) and calls `use_reference_cache`; from then on
the functions below answer from the cache for that version, loading what is missing. Rows are
loaded after the counter is read, so they are never older than the version they are filed under."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rewardmiles import limits
from rewardmiles.issuance import repository as repo

REFERENCE = "rewardmiles.reference"  # session.info key: the cache entries of this unit of work


@dataclass(slots=True)
class SponsorEntry:
    sponsor: repo.SponsorRow | None
    offers: dict[str, repo.OfferRow | None] = field(default_factory=dict)
    locations: dict[str, bool] = field(default_factory=dict)
    registers_any: bool | None = None


class ReferenceCache:
    def __init__(self) -> None:
        # (version, entries) in one tuple, so a reader never pairs one version's number with
        # another version's entries.
        self._current: tuple[int, dict[str, SponsorEntry]] = (-1, {})
        self._lock = threading.Lock()

    def entries(self, version: int) -> dict[str, SponsorEntry]:
        """The entries of `version`; a fresh uncached dict for a snapshot older than the newest
        version seen (so old and new rows never mix)."""
        current_version, current = self._current
        if version == current_version:
            return current
        with self._lock:
            if version > self._current[0]:
                self._current = (version, {})
            current_version, current = self._current
            if version == current_version:
                return current
        return {}

    def newest(self) -> tuple[int, dict[str, SponsorEntry]]:
        """The newest version seen and its entries (-1 and nothing before the first load)."""
        return self._current


_CACHES: WeakKeyDictionary[Engine, ReferenceCache] = WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def use_reference_cache(session: Session, version: int) -> None:
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    cache = _CACHES.get(engine)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.setdefault(engine, ReferenceCache())
    session.info[REFERENCE] = cache.entries(version)


def newest_reference(engine: Engine) -> tuple[int, dict[str, SponsorEntry]]:
    """The newest reference-data version this process has seen on `engine`, with what it has
    cached of it: for a caller that checks the version in its own statement."""
    cache = _CACHES.get(engine)
    return (-1, {}) if cache is None else cache.newest()


def _sponsor_entry(session: Session, code: str) -> SponsorEntry | None:
    entries: dict[str, SponsorEntry] | None = session.info.get(REFERENCE)
    if entries is None:
        return None
    entry = entries.get(code)
    if entry is None:
        entry = entries[code] = SponsorEntry(repo.load_sponsor(session, code))
    return entry


def get_sponsor(session: Session, code: str) -> repo.SponsorRow | None:
    entry = _sponsor_entry(session, code)
    return repo.load_sponsor(session, code) if entry is None else entry.sponsor


def get_offers(
    session: Session, sponsor_code: str, codes: Iterable[str]
) -> dict[str, repo.OfferRow]:
    entry = _sponsor_entry(session, sponsor_code)
    if entry is None:
        return repo.load_offers(session, sponsor_code, codes)
    wanted = set(codes)
    missing = [code for code in wanted if code not in entry.offers]
    if missing:
        loaded = repo.load_offers(session, sponsor_code, missing)
        if len(entry.offers) + len(missing) <= limits.reference_cached_codes_max:
            entry.offers.update({code: loaded.get(code) for code in missing})
        else:
            return {
                code: row for code in wanted if (row := entry.offers.get(code) or loaded.get(code))
            }
    return {code: row for code in wanted if (row := entry.offers[code]) is not None}


def registered_locations(
    session: Session, sponsor_code: str, codes: Iterable[str]
) -> tuple[bool, set[str]]:
    """(does the sponsor register any location, which of `codes` are registered)."""
    entry = _sponsor_entry(session, sponsor_code)
    if entry is None:
        return repo.load_locations(session, sponsor_code, codes)
    wanted = set(codes)
    missing = [code for code in wanted if code not in entry.locations]
    if missing:
        registers_any, known = repo.load_locations(session, sponsor_code, missing)
        entry.registers_any = registers_any or bool(entry.registers_any)
        if len(entry.locations) + len(missing) > limits.reference_cached_codes_max:
            return entry.registers_any, {c for c in wanted if c in known or entry.locations.get(c)}
        entry.locations.update({code: code in known for code in missing})
    known = {code for code in wanted if entry.locations[code]}
    if entry.registers_any is None:
        entry.registers_any = bool(known) or repo.registers_any_location(session, sponsor_code)
    return entry.registers_any, known
