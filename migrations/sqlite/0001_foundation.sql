-- Latchkey's own settings, such as the generated API secret key (sealed).
CREATE TABLE settings (
    name        TEXT PRIMARY KEY,
    value       BLOB NOT NULL,
    nonce       BLOB,
    key_id      TEXT
);

-- Integrations created through the API; those declared in nango.yaml live in the config.
CREATE TABLE integrations (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    unique_key              TEXT NOT NULL UNIQUE,
    provider                TEXT NOT NULL,
    display_name            TEXT,
    -- client id and secret, scopes, webhook secret, app credentials: sealed JSON
    credentials             BLOB,
    credentials_nonce       BLOB,
    credentials_key_id      TEXT,
    integration_config      TEXT NOT NULL DEFAULT '{}',
    custom                  TEXT NOT NULL DEFAULT '{}',
    forward_webhooks        BOOLEAN NOT NULL DEFAULT TRUE,
    allow_base_url_override BOOLEAN NOT NULL DEFAULT FALSE,
    created_at              BIGINT NOT NULL,   -- milliseconds since the epoch, as every time here
    updated_at              BIGINT NOT NULL
);

CREATE TABLE connections (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_config_key       TEXT NOT NULL,
    connection_id             TEXT NOT NULL,
    provider                  TEXT NOT NULL,
    credentials               BLOB NOT NULL,   -- sealed JSON
    credentials_nonce         BLOB NOT NULL,
    credentials_key_id        TEXT NOT NULL,
    credentials_expires_at    BIGINT,
    connection_config         TEXT NOT NULL DEFAULT '{}',
    metadata                  TEXT,            -- JSON object, or NULL when never set
    end_user                  TEXT,            -- JSON object, or NULL
    end_user_id               TEXT,
    end_user_organization_id  TEXT,
    webhook_url_override      TEXT,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    last_fetched_at           BIGINT,
    UNIQUE (provider_config_key, connection_id)
);
CREATE INDEX connections_newest_first ON connections (created_at DESC, id DESC);
CREATE INDEX connections_by_end_user ON connections (end_user_id);
CREATE INDEX connections_by_organization ON connections (end_user_organization_id);

-- Tags, one row each, so that filters are plain joins on both databases.
CREATE TABLE connection_tags (
    connection  INTEGER NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (connection, key)
);
CREATE INDEX connection_tags_by_value ON connection_tags (key, value);
