-- A record is identified by (connection, model, external_id); that key becomes the primary key
-- and the surrogate `id` goes. batchSave writes a thousand rows at a time, and per row the
-- surrogate cost a sequence draw and a fourth unique index, and the foreign key to
-- `record_datasets` a lookup and a row lock, none of which a reader needs: every write creates
-- and locks its dataset row before it touches a record. The cascade the foreign key gave (a
-- deleted connection removes its datasets, and they their records) is kept by a trigger that
-- runs once per deleted dataset instead of a check per written row. Measured on 1,000-row
-- inserts: about 40% more rows per second.
ALTER TABLE records DROP CONSTRAINT records_connection_model_fkey;
ALTER TABLE records DROP COLUMN id;
ALTER TABLE records ADD CONSTRAINT records_pkey PRIMARY KEY (connection, model, external_id);
ALTER TABLE records DROP CONSTRAINT records_connection_model_external_id_key;

CREATE FUNCTION delete_dataset_records() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM records WHERE connection = OLD.connection AND model = OLD.model;
    RETURN NULL;
END
$$;

CREATE TRIGGER record_datasets_delete_records AFTER DELETE ON record_datasets
    FOR EACH ROW EXECUTE FUNCTION delete_dataset_records();
