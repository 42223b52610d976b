-- TPC-B-like schema for the OLTP cold-start scenarios.
-- A fixed number of accounts with a fixed total balance; every transfer moves money between two
-- accounts and leaves exactly one history row, so after N transfers: count(history) = N, the
-- total is unchanged and each balance = initial - sum(out) + sum(in).
-- coldstart_bench/pg.py (ACCOUNTS, INITIAL_BALANCE) and components/pg_function.py
-- (DEFAULT_ACCOUNTS) rely on these numbers.
CREATE TABLE accounts (
    id       integer PRIMARY KEY,
    balance  bigint  NOT NULL,
    filler   char(84) NOT NULL DEFAULT ''
);

CREATE TABLE history (
    id          bigserial PRIMARY KEY,
    transfer_id text    NOT NULL UNIQUE,
    from_id     integer NOT NULL REFERENCES accounts (id),
    to_id       integer NOT NULL REFERENCES accounts (id),
    amount      bigint  NOT NULL CHECK (amount > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO accounts (id, balance) SELECT g, 100000 FROM generate_series(1, 100) AS g;
ANALYZE accounts;
