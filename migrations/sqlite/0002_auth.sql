-- Webhooks to the customer: every delivery is stored before it is sent, so that none is lost
-- to a restart and each can be listed and replayed.
CREATE TABLE webhook_deliveries (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type           TEXT NOT NULL,     -- the payload's `type`: auth, sync, forward, …
    url                  TEXT NOT NULL,
    body                 TEXT NOT NULL,     -- the exact JSON text that is signed and sent
    provider_config_key  TEXT,
    connection_id        TEXT,
    status               TEXT NOT NULL,     -- pending, delivered, failed
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      BIGINT NOT NULL,   -- milliseconds since the epoch, as every time here
    -- retries stop when this much older than the window start (the creation or the last replay)
    window_started_at    BIGINT NOT NULL,
    -- a node sending it holds it until then; a node that died mid-send lets it go
    claimed_until        BIGINT,
    last_status          INTEGER,
    last_error           TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    delivered_at         BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_newest_first ON webhook_deliveries (created_at DESC, id DESC);

-- Token refresh state of a connection: the last failure (the provider's error, as JSON
-- {type, description}), consecutive failed attempts and when the next one may run.
ALTER TABLE connections ADD COLUMN refresh_error TEXT;
ALTER TABLE connections ADD COLUMN refresh_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN next_refresh_at BIGINT;
ALTER TABLE connections ADD COLUMN last_refresh_success_at BIGINT;
ALTER TABLE connections ADD COLUMN last_refresh_failure_at BIGINT;
CREATE INDEX connections_by_expiry ON connections (credentials_expires_at);
