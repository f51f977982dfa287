"""Every fixed limit of the program, in one place, by whom it binds.

Limits that a program may tune live in `Settings` (`config.py`); these are the fixed ones, in four
sections. Those of the wire contract shape what a partner may send and gets back (SPEC §2), and
are published in the OpenAPI document and `docs/errors.md`; the others bound what an operator's
command accepts or shows, what the background workers do in one pass, and what the process keeps
in memory.
"""

from datetime import date
from typing import Final

# Wire contract: what a partner may send, and what it gets back.
request_body_bytes_max: Final = 1_048_576
token_body_bytes_max: Final = 8_192  # POST /oauth/token
sign_in_body_bytes_max: Final = 8_192  # POST /admin/session
# A partner body larger than this is parsed and validated in a CPU worker thread
# (`Settings.cpu_threads`), not on the event loop that serves every other request. A normal body
# (a POST/EVENT is ~0.2 KiB, ~30 us; 50 lines ~4 KiB) stays inline with no thread hop; the worst
# body of this size (all unknown members) costs the loop ~9 ms.
inline_body_bytes_max: Final = 16_384
problem_errors_max: Final = 50  # entries of a problem's `errors[]`; the rest are counted
request_header_bytes_max: Final = 16_384  # names and values of all headers together
request_headers_max: Final = 100
# The request line and every header as sent (CRLFs included), enforced by the connection layer
# while the head is read (`http.connections`): a head that has not ended within it is refused (431).
request_head_bytes_max: Final = 32_768
# After a 431 or 408 the answer is sent, then the end of output; what the client still sends is
# read and dropped for this long (so that it can read the answer), then the connection is closed.
refused_connection_linger_seconds: Final = 1.0
partner_transaction_id_chars_max: Final = 64
issuance_lines_per_request_max: Final = 50
coupons_per_request_max: Final = 50
coupon_chars_max: Final = 64
context_keys_max: Final = 20
context_key_chars_max: Final = 64
context_value_chars_max: Final = 256
device_id_chars_max: Final = 64
offer_code_chars_max: Final = 8
location_code_chars_max: Final = 10
offer_description_chars_max: Final = 255
offer_id_chars_max: Final = 64
idempotency_key_chars_max: Final = 255
sponsor_code_chars_min: Final = 2
sponsor_code_chars_max: Final = 10
collector_number_digits: Final = 11
# The shapes of the codes, as the OpenAPI document states them; the operator's commands that
# create sponsors, offers and locations hold them to the same shapes.
sponsor_code_pattern: Final = rf"^[A-Z0-9]{{{sponsor_code_chars_min},{sponsor_code_chars_max}}}$"
offer_code_pattern: Final = rf"^[A-Z0-9]{{1,{offer_code_chars_max}}}$"
location_code_pattern: Final = rf"^[!-~]{{1,{location_code_chars_max}}}$"
collector_number_pattern: Final = rf"^[0-9]{{{collector_number_digits}}}$"
rfc3339_chars_max: Final = 35  # 2026-11-30T04:10:41.123456789+14:00
future_skew_seconds_max: Final = 300
items_per_basket_max: Final = 500
item_quantity_max: Final = 1_000_000
item_number_max: Final = 1_000_000
item_id_chars_max: Final = 64
item_text_chars_max: Final = 255
basket_amount_max: Final = 1_000_000
batch_queue_retry_after_seconds: Final = 30  # Retry-After of 503 BATCH_QUEUE_FULL
in_use_retry_after_seconds: Final = 1  # Retry-After of 409 IDEMPOTENCY_KEY_IN_USE
# A partner log's results (GET /checkout/issuance/batches/{batchId}): `offset` and `limit`, and
# the length a record's `detail` is cut to when it is stored.
batch_records_offset_max: Final = 2**31 - 1
batch_records_page_max: Final = 10_000
batch_detail_chars_max: Final = 500
# The Transaction Day of a report: the days whose UTC bounds exist.
report_day_min: Final = date(1, 1, 2)
report_day_max: Final = date(9999, 12, 30)

# Operator: what the commands accept and show.
offer_rule_miles_max: Final = 1_000_000  # miles named in an offer's rule
collector_import_errors_kept_max: Final = 50  # refused rows a collector import reports
verify_problems_shown_max: Final = 20  # problems of each kind `ledger verify` lists
# The audit log's filters (`GET /admin/v1/audit-log`, the console's Audit log page).
audit_entity_chars_max: Final = 64
audit_entity_id_chars_max: Final = 128
audit_actor_chars_max: Final = 320  # an e-mail, `token:NAME` or `cli@HOST`
# Operators of the support desk and their admin tokens.
operator_email_chars_max: Final = 254  # RFC 5321's longest forward path, less its brackets
operator_display_name_chars_max: Final = 200
operator_password_chars_min: Final = 12
operator_password_chars_max: Final = 1024
admin_token_name_chars_max: Final = 64
admin_token_expires_days_max: Final = 3650
# Partner clients (the admin API and `rewardmiles partner`).
partner_client_name_chars_max: Final = 100
partner_client_sponsors_max: Final = 100
# The admin API's lists: items a page holds (`?limit=`), by default and at most; a cursor's length.
admin_page_items_default: Final = 50
admin_page_items_max: Final = 500
admin_cursor_chars_max: Final = 512
# The lines of one bulk review of pending lines, and a review's note.
pending_bulk_lines_max: Final = 500
admin_body_bytes_max: Final = 65_536  # a review's body (500 line ids)
review_note_chars_max: Final = 500
# Adjustments of a collector's miles.
adjustment_miles_max: Final = 100_000_000  # |miles| of one adjustment, whatever the role
adjustment_note_chars_max: Final = 500

# Workers: what the settlement loop and the webhook dispatcher do in one pass.
# After a failed pass, each loop waits twice as long as the last time, up to this.
worker_error_backoff_seconds_max: Final = 30.0
settlement_collectors_per_pass_max: Final = 200
# Lines settled under one hold of a collector's row lock: a backlog of thousands is settled in
# several short transactions, so the partner requests for that collector wait milliseconds, not
# seconds, between them.
settlement_lines_per_transaction_max: Final = 100
webhook_deliveries_per_pass_max: Final = 50
webhook_retry_delay_seconds_max: Final = 3600.0
webhook_error_chars_max: Final = 500  # a failed delivery's error, as stored
# Failed partner requests (support.recorder): kept in memory until its thread writes them, in
# batches; a full queue drops new ones (counted and logged), never blocks a request.
request_failures_queue_max: Final = 10_000
request_failures_batch_max: Final = 500
request_failures_flush_seconds: Final = 0.2
request_failures_purge_batch: Final = 1_000
request_failure_detail_chars_max: Final = 500

# Internal: what the process keeps in memory, and how often it reloads it.
token_cache_entries_max: Final = 10_000  # verified bearer tokens
# Offer and location codes cached per sponsor: unknown codes sent by a partner do not grow the
# reference cache beyond this.
reference_cached_codes_max: Final = 10_000
signing_keys_reload_interval_seconds_min: Final = 5.0  # an unknown `kid` reloads no sooner
signing_keys_missed_kids_max: Final = 1000  # unknown `kid`s remembered until the next reload

# Metrics (`GET /metrics`): the database-derived gauges (pending lines, the outbox) are read by one
# query each at a scrape and kept this long, so that several scrapers cost one read.
metrics_database_cache_seconds: Final = 5.0

# The console's Today page keeps an hour's figures in the process once the hour has been over this
# long (far longer than a request, a settlement or the failure recorder takes to commit a row it
# stamped inside the hour), for this long (what changes a closed hour later, such as the purge of
# old failed requests, shows within it), at most this many hours (two months of days).
today_hour_settled_seconds: Final = 300
today_closed_hour_keep_seconds: Final = 900
today_closed_hours_max: Final = 24 * 62
