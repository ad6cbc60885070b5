-- A frequency set for one sync instance through `PUT /sync/update-connection-frequency`, as the
-- caller wrote it (`every 30 minutes`). NULL follows the sync's `runs` in the configuration;
-- either way `frequency_ms` holds the frequency in force, which the scheduler reads.
ALTER TABLE sync_schedules ADD COLUMN frequency_override TEXT;
