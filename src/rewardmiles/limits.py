"""Every named limit of the partner API, in one place.

Limits that a program may tune live in `Settings`; these are the fixed ones that shape the wire
contract (SPEC §2) and are published in the OpenAPI document and `docs/errors.md`.
"""

from typing import Final

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
future_skew_seconds_max: Final = 300
token_cache_entries_max: Final = 10_000
items_per_basket_max: Final = 500
item_quantity_max: Final = 1_000_000
item_number_max: Final = 1_000_000
item_id_chars_max: Final = 64
item_text_chars_max: Final = 255
basket_amount_max: Final = 1_000_000
batch_queue_retry_after_seconds: Final = 30  # Retry-After of 503 BATCH_QUEUE_FULL
