-- Records written by syncs, one row per (connection, model, record id). `seq` orders a
-- dataset's changes: every write that changes a record gives it the dataset's next number, so
-- a cursor (the last `seq` read) never skips a change, even under concurrent writes, because
-- writers of one dataset serialize on its `record_datasets` row.
CREATE TABLE record_datasets (
    connection  BIGINT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    model       TEXT NOT NULL,            -- `Model` or `Model::variant`
    last_seq    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (connection, model)
);

CREATE TABLE records (
    id                BIGSERIAL PRIMARY KEY,
    connection        BIGINT NOT NULL,
    model             TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    data              TEXT NOT NULL,      -- the record as JSON, '{}' once pruned
    data_hash         TEXT NOT NULL,
    seq               BIGINT NOT NULL,
    first_seen_at     BIGINT NOT NULL,
    last_modified_at  BIGINT NOT NULL,
    deleted_at        BIGINT,
    pruned_at         BIGINT,
    last_action       TEXT NOT NULL,      -- ADDED, UPDATED or DELETED
    seen_run          BIGINT NOT NULL DEFAULT 0,  -- the last sync run that saved it (deletion tracking)
    FOREIGN KEY (connection, model) REFERENCES record_datasets (connection, model) ON DELETE CASCADE,
    UNIQUE (connection, model, external_id)
);
CREATE UNIQUE INDEX records_by_cursor ON records (connection, model, seq);
CREATE INDEX records_by_modified ON records (connection, model, last_modified_at);

-- Checkpoints of functions, flat JSON objects, per connection and key (`sync:<name>:<variant>`).
CREATE TABLE function_checkpoints (
    connection  BIGINT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (connection, key)
);

-- One schedule per sync and connection.
CREATE TABLE sync_schedules (
    id              BIGSERIAL PRIMARY KEY,
    connection      BIGINT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    sync_name       TEXT NOT NULL,
    variant         TEXT NOT NULL DEFAULT 'base',
    state           TEXT NOT NULL,         -- STARTED or PAUSED
    frequency_ms    BIGINT NOT NULL,
    next_run_at     BIGINT NOT NULL,
    -- the kind the next run must be (FULL after a reset), NULL for the configured kind
    next_run_kind   TEXT,
    last_sync_date  BIGINT,                -- start of the last successful run
    created_at      BIGINT NOT NULL,
    UNIQUE (connection, sync_name, variant)
);
CREATE INDEX sync_schedules_due ON sync_schedules (next_run_at) WHERE state = 'STARTED';

-- Every run of a sync; at most one RUNNING per schedule, which the partial index enforces.
CREATE TABLE sync_runs (
    id            BIGSERIAL PRIMARY KEY,
    schedule      BIGINT NOT NULL REFERENCES sync_schedules (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,           -- INCREMENTAL or FULL
    status        TEXT NOT NULL,           -- RUNNING, SUCCESS or FAILED
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    finished_at   BIGINT,
    results       TEXT NOT NULL DEFAULT '{}',   -- {model: {added, updated, deleted}}
    error         TEXT
);
CREATE UNIQUE INDEX sync_runs_one_running ON sync_runs (schedule) WHERE status = 'RUNNING';
CREATE INDEX sync_runs_latest ON sync_runs (schedule, id DESC);

-- Asynchronous actions (`X-Async`), read back through `GET /action/:id`.
CREATE TABLE action_runs (
    id           TEXT PRIMARY KEY,
    connection   BIGINT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    action_name  TEXT NOT NULL,
    status       TEXT NOT NULL,            -- RUNNING, SUCCESS or FAILED
    output       TEXT,                     -- the output, or the error envelope, as JSON
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
