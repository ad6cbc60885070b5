-- Pages of `GET /records` that filter by `modified_after` or by action read one index range in
-- `seq` order instead of scanning the dataset.
--
-- Writers now keep `last_modified_at` non-decreasing along `seq` within a dataset (a write's
-- time is at least the dataset's last one, which `record_datasets.last_modified_at` holds), so
-- the records modified at or after a time are exactly those from the first such record's `seq`
-- on. Rows written before this migration get the running maximum, which moves a time by at
-- most the clock difference between two concurrent writers.
ALTER TABLE record_datasets ADD COLUMN last_modified_at BIGINT NOT NULL DEFAULT 0;

UPDATE records SET last_modified_at = ordered.running
FROM (
    SELECT id, MAX(last_modified_at) OVER (PARTITION BY connection, model ORDER BY seq) AS running
    FROM records
) AS ordered
WHERE records.id = ordered.id AND records.last_modified_at <> ordered.running;

UPDATE record_datasets SET last_modified_at = COALESCE(
    (SELECT MAX(last_modified_at) FROM records
     WHERE records.connection = record_datasets.connection AND records.model = record_datasets.model),
    0);

DROP INDEX records_by_modified;
CREATE INDEX records_by_modified ON records (connection, model, last_modified_at, seq);
CREATE INDEX records_by_action ON records (connection, model, last_action, seq);
