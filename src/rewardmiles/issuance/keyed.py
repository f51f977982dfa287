"""A partner call under its idempotency key: the unit of work's first statement claims the key
(409 while another process runs it) and replays a stored outcome (422 for another request), and
a stored call answers again as it stands now. The boundary that runs the call opens its units of
work (`Database.run_in_unit_of_work`: a unique-constraint race lost to another process is run
again, and replays the winner) with the key held in the process (`InFlightRegistry.hold`)."""

from __future__ import annotations

from datetime import datetime

import orjson
from sqlalchemy.orm import Session

from rewardmiles.idempotency import repository as keys
from rewardmiles.idempotency import service as idempotency
from rewardmiles.issuance import repository as repo
from rewardmiles.issuance.calls import Outcome, PartnerCall, wire_status
from rewardmiles.issuance.reference import use_reference_cache
from rewardmiles.issuance.schemas import without_empty
from rewardmiles.vocabulary import LineStatus


def claim(session: Session, call: PartnerCall) -> Outcome | None:
    """The first statement of a call's unit of work: with a key, take it (409 while another
    process runs it) and return the replay of its stored outcome (422 for another request), if
    any; then use the reference-data cache of the version read."""
    key = call.idempotency_key
    if key is not None:
        claimed = idempotency.claim(session, call.client_id, key)
        if claimed.stored is not None:
            idempotency.ensure_same_request(claimed.stored, call.fingerprint)
            return replay_stored(session, claimed.stored)
        version = claimed.reference_version
    else:
        version = keys.reference_version(session)
    use_reference_cache(session, version)
    return None


def key_row(call: PartnerCall, key: str, outcome: Outcome, now: datetime) -> dict[str, object]:
    return idempotency.key_row(
        client_id=call.client_id,
        key=key,
        request_fingerprint=call.fingerprint,
        transaction_id=outcome.transaction_id,
        status=outcome.status,
        body=outcome.body,
        now=now,
    )


def replay_stored(session: Session, stored: idempotency.StoredOutcome) -> Outcome:
    if stored.transaction_id is not None and stored.status in (200, 202):
        return render_current(session, stored.transaction_id, replayed=True)
    return Outcome(stored.status, stored.body, stored.transaction_id, replayed=True)


def render_current(session: Session, transaction_id: str, *, replayed: bool) -> Outcome:
    """The response of an accepted transaction as it stands now (a 202 turns 200 once settled)."""
    response_json, lines = repo.get_transaction_state(session, transaction_id)
    return render_state(transaction_id, response_json, lines, replayed=replayed)


def render_state(
    transaction_id: str, response_json: str, lines: list[repo.LineState], *, replayed: bool
) -> Outcome:
    """`render_current` from the transaction's stored response and its lines' states."""
    # A response stored before empty optionals were left out (SPEC §2.5, amended) renders as
    # one stored now.
    body = without_empty(orjson.loads(response_json))
    pending, rejected = LineStatus.PENDING, LineStatus.REJECTED  # read once, not once per line
    for out_line, line in zip(body.get("issuances", ()), lines, strict=True):
        status = wire_status(line.direction, line.status)
        if status is not None:
            out_line["status"] = status
        if line.status == rejected and line.error_code:
            out_line["errorCode"] = line.error_code
    any_pending = any(line.status == pending for line in lines)
    return Outcome(202 if any_pending else 200, body, transaction_id, replayed)
