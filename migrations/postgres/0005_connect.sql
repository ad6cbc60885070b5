-- Connect sessions: short-lived tokens a backend hands to its frontend so that an end user can
-- create a connection. Only a SHA-256 hash of the token is kept; the rest is JSON.
CREATE TABLE connect_sessions (
    token_hash  TEXT PRIMARY KEY,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX connect_sessions_by_expiry ON connect_sessions (expires_at);

-- OAuth flows between the redirect to the provider and its callback, keyed by a hash of the
-- random `state`. The flow holds the PKCE verifier, so it is sealed like credentials.
CREATE TABLE oauth_flows (
    state_hash  TEXT PRIMARY KEY,
    sealed      BYTEA NOT NULL,
    nonce       BYTEA NOT NULL,
    key_id      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX oauth_flows_by_expiry ON oauth_flows (expires_at);
