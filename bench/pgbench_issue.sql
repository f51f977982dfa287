-- The SQL work of one POST/EVENT (one 5-mile line, enrolled ACTIVE collector, Idempotency-Key),
-- statement for statement as rewardmiles sends it (commit b9217ef; captured with
-- log_statement=all, and re-captured by the harness on every run: "SQL of one request" in
-- bench/results/latest.md, which warns when this script no longer matches).
-- 6 round trips, like the service: BEGIN; key lock + stored outcome + reference version; collector
-- row lock; balance update; one pipeline of the four inserts (transaction, line, entry pair,
-- idempotency key); COMMIT. Sponsor, offer and location rows are cached by the service (no SQL).
--
-- Variables (pgbench -D): collectors=N (enrolled numbers 80000000001 … 80000000000+N),
-- run=R (unique per pgbench run), seq=0 (per-client counter, incremented below). The key, the
-- transaction id and the collector number the service computes in Python are computed inline.
-- Run by the harness (python -m bench.run) as: pgbench -n -c 16 -j 2 -T S -M prepared -f bench/pgbench_issue.sql ...
\set c random(1, :collectors)
\set seq :seq + 1
\set lock hash(:seq + 1000000000 * :client_id, :run)
BEGIN;
-- idempotency: in-flight advisory lock, the stored outcome of (client, key), reference version
SELECT pg_try_advisory_xact_lock(:lock) AS locked,
       (SELECT version FROM reference_version WHERE id = 1) AS reference_version,
       k.fingerprint, k.transaction_id, k.response_status, k.response_json
  FROM (SELECT 1 AS one) AS one
  LEFT JOIN idempotency_keys AS k
    ON k.client_id = 'pgbench'
   AND k.key = 'pgb-' || :run::text || '-' || :client_id::text || '-' || :seq::text;
-- collector row lock
SELECT number, status, balance_miles FROM collectors
 WHERE number = (80000000000 + :c)::text FOR UPDATE;
-- the balance (RETURNING: the service checks it against the locked balance)
UPDATE collectors SET balance_miles = balance_miles + 5, updated_at = now()
 WHERE number = (80000000000 + :c)::text RETURNING balance_miles;
\startpipeline
-- the transaction row (request and response JSON of the service's size)
INSERT INTO transactions (id, client_id, sponsor_code, endpoint, partner_transaction_id,
    collector_number, original_transaction_id, status, http_status, error_code, fingerprint,
    partner_datetime, processed_at, request_json, response_json, calculation_json)
VALUES (md5(:run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text,
    'pgbench', 'BNCH', 'post_event', 'pgb-' || :run::text || '-' || :client_id::text || '-' || :seq::text,
    (80000000000 + :c)::text, NULL, 'posted', 200, NULL,
    md5(:run::text || :client_id::text || :seq::text) || md5(:seq::text || :client_id::text),
    now(), now(),
    '{"clientTransactionId":"pgb-' || :run::text || '-' || :client_id::text || '-' || :seq::text || '","collectorNumber":"' || (80000000000 + :c)::text || '","issuances":[{"issuanceOfferCode":"STANDARD","milesAmount":5}],"sponsorCode":"BNCH","transactionDateTime":"2026-11-25T22:09:40Z"}',
    '{"clientTransactionId":"pgb-' || :run::text || '-' || :client_id::text || '-' || :seq::text || '","collectorNumber":"' || (80000000000 + :c)::text || '","issuances":[{"issuanceOfferCode":"STANDARD","milesAmount":5,"status":"ISSUED"}],"sponsorCode":"BNCH","transactionDateTime":"2026-11-25T17:09:41.494-05:00","transactionId":"' || md5(:run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text || '"}',
    NULL);
-- its line
INSERT INTO issuance_lines (transaction_id, line_no, direction, offer_code, location_code, miles,
    status, pending_reason, error_code, settled_at)
VALUES (md5(:run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text, 0, 'credit',
    'STANDARD', NULL, 5, 'posted', NULL, NULL, now());
-- the ledger entry pair (the service's executemany: two statements in the pipeline)
INSERT INTO ledger_entries (transaction_id, line_no, account_kind, account_code, amount_miles,
    posted_at)
VALUES (md5(:run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text, 0,
    'collector', (80000000000 + :c)::text, 5, now());
INSERT INTO ledger_entries (transaction_id, line_no, account_kind, account_code, amount_miles,
    posted_at)
VALUES (md5(:run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text, 0,
    'sponsor', 'BNCH', -5, now());
-- the idempotency row with the outcome
INSERT INTO idempotency_keys (client_id, key, fingerprint, transaction_id, response_status,
    response_json, created_at)
VALUES ('pgbench', 'pgb-' || :run::text || '-' || :client_id::text || '-' || :seq::text,
    md5(:run::text || :client_id::text || :seq::text) || md5(:seq::text || :client_id::text),
    md5(:run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text, 200,
    '{"clientTransactionId":"pgb-' || :run::text || '-' || :client_id::text || '-' || :seq::text || '","collectorNumber":"' || (80000000000 + :c)::text || '","issuances":[{"issuanceOfferCode":"STANDARD","milesAmount":5,"status":"ISSUED"}],"sponsorCode":"BNCH","transactionDateTime":"2026-11-25T17:09:41.494-05:00","transactionId":"' || md5(:run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text || '"}',
    now());
\endpipeline
END;
