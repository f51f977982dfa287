"""The rewardmiles benchmark harness: database ceiling, HTTP ceiling and the service, side by side.

    .venv/bin/python -m bench.run            # full run, a few minutes
    .venv/bin/python -m bench.run --quick    # smoke run, about a minute

One run, on this machine, measures:

1. the load generator's own ceiling (bench/loadgen.py against bench/rawserver.py; wrk too when
   installed) — the generator must not be the bottleneck;
2. the HTTP ceiling: the service's server stack (create_app, uvicorn as `rewardmiles serve` runs
   it) answering a no-op POST (bench/noop_server.py) with the POST/EVENT request;
3. two database ceilings, pgbench on throwaway databases with the real schema (migrated by the
   CLI), each doing the SQL work of one POST/EVENT: bench/pgbench_issue.sql as separate
   statements in a transaction (6 round trips: the general unit of work, which every POST/EVENT
   ran before the one-statement path and which it still falls back to) and
   bench/pgbench_issue_one_statement.sql as the one statement the service now sends (1 round
   trip, autocommit; generated from the service's statement by bench/pgbench_one_statement.py);
   and two for reversals: bench/pgbench_reverse.sql, the SQL work of one REVERSE/EVENT (8 round
   trips, the unit of work, one call at a time; the service now batches reversals too, and
   falls back to it) of originals written beforehand, and the 50/50 mix of (c) below
   (the issue and reverse scripts in turn on each connection);
4. rewardmiles itself (`rewardmiles serve`, a real process): PostgreSQL with 1 and 2 API
   processes (the better one runs every scenario) and SQLite with 1 — (a) POST/EVENT with unique
   keys over many collectors, (b) over 10 hot collectors, (c) 50/50 POST/EVENT and REVERSE/EVENT
   of an acknowledged issue, (d) replays of completed keys.

Each rewardmiles row is given as a ratio to both database ceilings (the (c) rows: to the mix's) and
to the HTTP ceiling. The SQL the service sends for one request is captured in process on every
run (bench/capture_sql.py, both ways to the database) and compared with the pgbench scripts.

Every rewardmiles database ends with `rewardmiles ledger verify` (the run fails loudly if it does
not pass); durability settings are left as they are. Results: a Markdown table on stdout and in
bench/results/latest.md, everything in bench/results/latest.json; with py-spy installed, a profile
of the unique-keys scenario on PostgreSQL (bench/results/profile.txt and profile.md).
"""
