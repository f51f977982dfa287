"""Partner walk-through with the rewardmiles-client SDK.

Against `rewardmiles serve --demo` (install the SDK with `pip install -e ./client`):

    python examples/partner_walkthrough.py --base-url http://127.0.0.1:8000

Issues 8 miles to collector 80085102028, reverses 3 of them, looks the transaction up and prints
each result. Exits non-zero on any unexpected outcome.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid

from rewardmiles_client import EventRequest, IssuanceClient, Line, RewardMilesError

COLLECTOR = "80085102028"
SPONSOR = "KENY"


def run(base_url: str, client_id: str, client_secret: str) -> None:
    suffix = uuid.uuid4().hex[:12]
    with IssuanceClient(base_url, client_id, client_secret) as client:
        issued = client.post_event(
            EventRequest(
                client_transaction_id=f"walk-{suffix}",
                collector_number=COLLECTOR,
                sponsor_code=SPONSOR,
                lines=[Line("STANDARD", 8, location_code="0037")],
            )
        )
        print(f"issued: HTTP {issued.status_code}, transaction {issued.transaction_id}, "
              f"lines {[(x.offer_code, x.miles, x.status) for x in issued.lines]}")  # fmt: skip
        if issued.status_code != 200 or issued.transaction_id is None:
            raise SystemExit(f"unexpected issuance outcome: {issued.body}")

        reversal = client.reverse_event(
            EventRequest(
                client_transaction_id=f"walk-rev-{suffix}",
                collector_number=COLLECTOR,
                sponsor_code=SPONSOR,
                lines=[Line("STANDARD", 3)],
                original_client_transaction_id=f"walk-{suffix}",
            )
        )
        print(f"reversed: HTTP {reversal.status_code}, transaction {reversal.transaction_id}")
        if reversal.status_code != 200:
            raise SystemExit(f"unexpected reversal outcome: {reversal.body}")

        view = client.get_transaction(issued.transaction_id)
        print("lookup:", json.dumps(view, indent=2))
        reversed_miles = view["issuances"][0].get("milesReversed")
        if reversed_miles != 3:
            raise SystemExit(f"expected 3 miles reversed, the lookup says {reversed_miles}")
    print("ok: 8 issued, 3 reversed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--client-id", default="demo-keny")
    parser.add_argument("--client-secret", default="demo-keny-secret")
    args = parser.parse_args()
    try:
        run(args.base_url, args.client_id, args.client_secret)
    except RewardMilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
