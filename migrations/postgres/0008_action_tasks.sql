-- Async actions become durable tasks: the input and the retry budget are stored before the 202,
-- so any node can run an attempt, take up one whose node stopped (its heartbeat lapsed), and
-- retry after a back-off that a restart does not lose. Status: PENDING (waiting for its next
-- attempt), RUNNING, SUCCESS or FAILED.
ALTER TABLE action_runs ADD COLUMN input TEXT NOT NULL DEFAULT 'null';
ALTER TABLE action_runs ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;      -- attempts started
ALTER TABLE action_runs ADD COLUMN max_retries BIGINT NOT NULL DEFAULT 0;   -- X-Max-Retries
ALTER TABLE action_runs ADD COLUMN next_attempt_at BIGINT;
ALTER TABLE action_runs ADD COLUMN heartbeat_at BIGINT;
ALTER TABLE action_runs ADD COLUMN updated_at BIGINT;

-- What ran before this migration ran in a node's memory, without its input: it cannot be resumed.
UPDATE action_runs
SET status = 'FAILED', finished_at = created_at, updated_at = created_at,
    output = '{"type":"action_interrupted","message":"the node running it stopped"}'
WHERE status = 'RUNNING';
UPDATE action_runs SET updated_at = COALESCE(finished_at, created_at) WHERE updated_at IS NULL;

CREATE INDEX action_runs_due ON action_runs (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX action_runs_running ON action_runs (heartbeat_at) WHERE status = 'RUNNING';
CREATE INDEX action_runs_finished ON action_runs (finished_at) WHERE finished_at IS NOT NULL;
