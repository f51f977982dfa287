-- The SQL work of one REVERSE/EVENT (the whole 5-mile STANDARD line of a POST/EVENT taken back,
-- enrolled ACTIVE collector, Idempotency-Key), statement for statement as rewardmiles sends it
-- (the unit of work; re-captured by the harness on every run: "SQL of one request" in
-- bench/results/latest.md, which warns when this script no longer matches).
-- 8 round trips, like the service: BEGIN; key lock + stored outcome + reference version; collector
-- row lock; the original's row lock (by its partner id); what the original issued and what its
-- reversals took so far; balance update; one pipeline of the four inserts (transaction, line,
-- entry pair, idempotency key); COMMIT.
--
-- The original is the POST/EVENT of bench/pgbench_issue.sql with run `orun` and sequence `oseq`
-- of the same client, made out to collector `c`. Standing alone (this file), each call reverses
-- an original the harness wrote beforehand for its run (`bench.run.ceilings.seed_originals`:
-- the same ids, the collector computed below). In the 50/50 mix (`bench.run.ceilings.mix_script`)
-- the header's \set lines give way to the mix's: the original is the client's previous call.
--
-- Variables (pgbench -D): collectors=N, run=R (unique per pgbench run), seq=0.
\set seq :seq + 1
\set orun :run
\set oseq :seq
\set c 1 + ((:client_id * 100003 + :seq) % :collectors)
\set lock hash(:seq + 1000000000 * :client_id, :run + 1)
BEGIN;
-- idempotency: in-flight advisory lock, the stored outcome of (client, key), reference version
SELECT pg_try_advisory_xact_lock(:lock) AS locked,
       (SELECT version FROM reference_version WHERE id = 1) AS reference_version,
       k.fingerprint, k.transaction_id, k.response_status, k.response_json
  FROM (SELECT 1 AS one) AS one
  LEFT JOIN idempotency_keys AS k
    ON k.client_id = 'pgbench'
   AND k.key = 'pgr-' || :run::text || '-' || :client_id::text || '-' || :seq::text;
-- collector row lock
SELECT number, status, balance_miles FROM collectors
 WHERE number = (80000000000 + :c)::text FOR UPDATE;
-- the original under its row lock (an accepted POST/EVENT or POST of the sponsor)
SELECT id, endpoint, sponsor_code, collector_number, fingerprint FROM transactions
 WHERE sponsor_code = 'BNCH' AND endpoint IN ('post_event', 'post')
   AND partner_transaction_id = 'pgb-' || :orun::text || '-' || :client_id::text || '-' || :oseq::text
   AND status <> 'rejected'
   FOR UPDATE;
-- what the original issued, and what its reversals took so far, per offer
SELECT 'issued' AS kind, offer_code, status, miles FROM issuance_lines
 WHERE transaction_id = md5(:orun::text || '-' || :client_id::text || '-' || :oseq::text)::uuid::text
   AND direction = 'credit' AND status <> 'rejected'
UNION ALL
SELECT 'reversed' AS kind, l.offer_code, NULL AS status, sum(l.miles) FROM issuance_lines AS l
  JOIN transactions AS r ON r.id = l.transaction_id
 WHERE r.original_transaction_id = md5(:orun::text || '-' || :client_id::text || '-' || :oseq::text)::uuid::text
   AND l.status <> 'rejected'
 GROUP BY l.offer_code;
-- the balance (RETURNING: the service checks it against the locked balance)
UPDATE collectors SET balance_miles = balance_miles - 5, updated_at = now()
 WHERE number = (80000000000 + :c)::text RETURNING balance_miles;
\startpipeline
-- the reversal's transaction row (request and response JSON of the service's size)
INSERT INTO transactions (id, client_id, sponsor_code, endpoint, partner_transaction_id,
    collector_number, original_transaction_id, status, http_status, error_code, fingerprint,
    partner_datetime, processed_at, request_json, response_json, calculation_json)
VALUES (md5('r' || :run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text,
    'pgbench', 'BNCH', 'reverse_event', 'pgr-' || :run::text || '-' || :client_id::text || '-' || :seq::text,
    (80000000000 + :c)::text,
    md5(:orun::text || '-' || :client_id::text || '-' || :oseq::text)::uuid::text,
    'posted', 200, NULL,
    md5('r' || :run::text || :client_id::text || :seq::text) || md5(:seq::text || :client_id::text),
    now(), now(),
    '{"clientTransactionId":"pgr-' || :run::text || '-' || :client_id::text || '-' || :seq::text || '","collectorNumber":"' || (80000000000 + :c)::text || '","issuances":[{"issuanceOfferCode":"STANDARD","milesAmount":5}],"originalClientTransactionId":"pgb-' || :orun::text || '-' || :client_id::text || '-' || :oseq::text || '","sponsorCode":"BNCH","transactionDateTime":"2026-11-25T22:09:40Z"}',
    '{"clientTransactionId":"pgr-' || :run::text || '-' || :client_id::text || '-' || :seq::text || '","collectorNumber":"' || (80000000000 + :c)::text || '","issuances":[{"issuanceOfferCode":"STANDARD","milesAmount":5,"status":"REVERSED"}],"originalClientTransactionId":"pgb-' || :orun::text || '-' || :client_id::text || '-' || :oseq::text || '","sponsorCode":"BNCH","transactionDateTime":"2026-11-25T17:09:41.494-05:00","transactionId":"' || md5('r' || :run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text || '"}',
    NULL);
-- its line
INSERT INTO issuance_lines (transaction_id, line_no, direction, offer_code, location_code, miles,
    status, pending_reason, error_code, settled_at)
VALUES (md5('r' || :run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text, 0,
    'debit', 'STANDARD', NULL, 5, 'posted', NULL, NULL, now());
-- the ledger entry pair (the service's executemany: two statements in the pipeline)
INSERT INTO ledger_entries (transaction_id, line_no, account_kind, account_code, amount_miles,
    posted_at)
VALUES (md5('r' || :run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text, 0,
    'collector', (80000000000 + :c)::text, -5, now());
INSERT INTO ledger_entries (transaction_id, line_no, account_kind, account_code, amount_miles,
    posted_at)
VALUES (md5('r' || :run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text, 0,
    'sponsor', 'BNCH', 5, now());
-- the idempotency row with the outcome
INSERT INTO idempotency_keys (client_id, key, fingerprint, transaction_id, response_status,
    response_json, created_at)
VALUES ('pgbench', 'pgr-' || :run::text || '-' || :client_id::text || '-' || :seq::text,
    md5('r' || :run::text || :client_id::text || :seq::text) || md5(:seq::text || :client_id::text),
    md5('r' || :run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text, 200,
    '{"clientTransactionId":"pgr-' || :run::text || '-' || :client_id::text || '-' || :seq::text || '","collectorNumber":"' || (80000000000 + :c)::text || '","issuances":[{"issuanceOfferCode":"STANDARD","milesAmount":5,"status":"REVERSED"}],"originalClientTransactionId":"pgb-' || :orun::text || '-' || :client_id::text || '-' || :oseq::text || '","sponsorCode":"BNCH","transactionDateTime":"2026-11-25T17:09:41.494-05:00","transactionId":"' || md5('r' || :run::text || '-' || :client_id::text || '-' || :seq::text)::uuid::text || '"}',
    now());
\endpipeline
END;
