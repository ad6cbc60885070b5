-- A record is identified by (connection, model, external_id); that key becomes the primary key
-- and the surrogate `id` goes, as on PostgreSQL, where batchSave paid for it (and for the
-- foreign key to `record_datasets`) on every row. Every write creates and locks its dataset row
-- before it touches a record, so the foreign key is not needed either; the cascade it gave (a
-- deleted connection removes its datasets, and they their records) is kept by a trigger.
-- SQLite cannot drop a column that is the primary key or a foreign key, so the table is copied.
CREATE TABLE records_keyed (
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
    PRIMARY KEY (connection, model, external_id)
);

INSERT INTO records_keyed (connection, model, external_id, data, data_hash, seq, first_seen_at,
    last_modified_at, deleted_at, pruned_at, last_action, seen_run)
SELECT connection, model, external_id, data, data_hash, seq, first_seen_at,
    last_modified_at, deleted_at, pruned_at, last_action, seen_run
FROM records ORDER BY id;

DROP TABLE records;
ALTER TABLE records_keyed RENAME TO records;

CREATE UNIQUE INDEX records_by_cursor ON records (connection, model, seq);
CREATE INDEX records_by_modified ON records (connection, model, last_modified_at, seq);
CREATE INDEX records_by_action ON records (connection, model, last_action, seq);

CREATE TRIGGER record_datasets_delete_records AFTER DELETE ON record_datasets
BEGIN
    DELETE FROM records WHERE connection = OLD.connection AND model = OLD.model;
END;
