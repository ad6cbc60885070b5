-- The log store: one entry per proxied request, and the lines functions write. Written in
-- batches off the hot path; pruned by age (`logs.retention` in nango.yaml).
CREATE TABLE logs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at      BIGINT NOT NULL,   -- milliseconds since the epoch
    kind            TEXT NOT NULL,     -- proxy | function
    level           TEXT NOT NULL,     -- debug | info | warn | error
    message         TEXT NOT NULL,
    integration     TEXT,
    connection      TEXT,
    operation       TEXT,              -- a function's name or run, to group its lines
    method          TEXT,
    path            TEXT,              -- the caller's endpoint, without its query string
    status          INTEGER,           -- the upstream's status, or the gateway's own answer
    latency_ms      BIGINT,
    retries         INTEGER NOT NULL DEFAULT 0,
    request_bytes   BIGINT,
    response_bytes  BIGINT,
    error           TEXT               -- what went wrong, in the gateway's words; never a credential
);
CREATE INDEX logs_by_age ON logs (created_at);
CREATE INDEX logs_by_connection ON logs (integration, connection, id);
