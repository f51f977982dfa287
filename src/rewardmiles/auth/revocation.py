"""Revoked partner clients, known to every API process within seconds, at no database read per
partner request.

Each API process runs one `ClientWatch` thread. Every `Settings.revocation_refresh_seconds` (2 s)
it reads the revoked clients (one indexed query on `partner_clients.revoked_at`; revoked clients
are few) and hands the set to the process's `TokenService`, which refuses any token of a client in
it (`TOKEN_REVOKED`) with one in-memory set lookup per request, the verified-token cache's hits
included. Revocation is final (no un-revoke: a client that must work again is a new client), so
every token of a revoked client is refused, whenever it was issued, including one signed while
the revocation committed. The process that revokes adds the client to its own set at once.

The same pass writes the clients' last token times that `/oauth/token` noted in memory since the
previous pass (one UPDATE per client that signed in), so sign-ins write nothing themselves; a
crash loses at most one interval of those times.

A failed pass (database down) keeps the last set and is logged; the next pass tries again.
"""

from __future__ import annotations

import threading
from datetime import datetime

from rewardmiles import logs
from rewardmiles.auth import service
from rewardmiles.auth.tokens import TokenService
from rewardmiles.db.engine import Database

log = logs.get_logger("rewardmiles.auth")


class ClientWatch:
    def __init__(self, db: Database, tokens: TokenService, *, interval_seconds: float) -> None:
        self._db = db
        self._tokens = tokens
        self.interval_seconds = interval_seconds
        self._issued: dict[str, datetime] = {}
        self._issued_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._revoked_here: set[str] = set()  # revocation is final: kept in every set read
        self.refreshes = 0  # passes done (tests read it)

    def note_issued(self, client_id: str, at: datetime) -> None:
        """`/oauth/token` issued a token to `client_id` at `at`: written by the next pass."""
        with self._issued_lock:
            self._issued[client_id] = at

    def revoked_here(self, client_id: str) -> None:
        """This process revoked `client_id`: refuse its tokens now, not at the next pass."""
        with self._issued_lock:
            self._revoked_here.add(client_id)
        self._tokens.refuse_clients(self._tokens.revoked_clients | {client_id})

    def refresh(self) -> None:
        """One pass: write the noted token times, then read the revoked clients."""
        with self._issued_lock:
            issued, self._issued = self._issued, {}
        if issued:
            try:
                with self._db.unit_of_work() as session:
                    service.record_token_times(session, issued)
            except Exception:
                with self._issued_lock:  # kept for the next pass (unless a newer time came)
                    for client_id, at in issued.items():
                        self._issued.setdefault(client_id, at)
                raise
        with self._db.reader() as session:
            revoked = service.revoked_client_ids(session)
        with self._issued_lock:  # a pass that read before this process's revocation committed
            revoked |= self._revoked_here
        self._tokens.refuse_clients(frozenset(revoked))
        self.refreshes += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                self.refresh()
            except Exception as exc:  # the database is away: keep the last set, try again
                log.warning("revocation_refresh_failed", error=type(exc).__name__)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="client-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            self.refresh()  # the last token times
        except Exception as exc:
            log.warning("revocation_refresh_failed", error=type(exc).__name__)
