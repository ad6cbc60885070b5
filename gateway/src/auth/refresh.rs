//! Token refresh: credentials are renewed before they are used when they expire within the
//! margin (15 minutes unless the integration or the provider says otherwise), on demand after a
//! provider rejected them ([`Refresher::force`]), and in the background for connections nearing
//! expiry. What can be renewed without the user: OAuth 2 tokens with a refresh token, client
//! credentials, GitHub App installation tokens, and TWO_STEP tokens (the exchange repeated with
//! the stored fields).
//!
//! One refresh per connection across all nodes: in a process, callers queue on a per-connection
//! lock; across nodes, the holder also takes a PostgreSQL advisory lock on a connection of its
//! own (closed afterwards, so a holder that dies frees it with its session, and waiters give up
//! after a timeout). Whoever gets a lock reads the connection again first: when someone else
//! refreshed meanwhile, that result is used and the provider is not called. The critical section
//! runs in its own task, so a caller that goes away cannot cut a refresh off between the
//! provider rotating the refresh token and the new one being stored.
//!
//! New credentials are merged into the old (a refresh token is kept unless a new one came), and
//! the response's metadata into the connection config. A
//! failure is stored on the connection (the provider's error, the attempts, the next attempt
//! time, backing off) and reported by Nango's `auth` webhook (`operation: refresh`,
//! `success: false`) once per failure streak; the success that ends a streak sends the same
//! webhook with `success: true`. When a refresh before use fails, or is backing off, a token
//! that is still valid is used as is; only an expired one makes the caller fail.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::StatusCode;
use rand::Rng;
use serde_json::{json, Map, Value};
use sqlx::pool::PoolConnection;
use sqlx::Postgres;

use super::token::{self, Client, Grant, TokenError};
use super::two_step;
use crate::app::App;
use crate::catalog::Provider;
use crate::connection::{Connection, Credentials};
use crate::integration::Integration;
use crate::proxy::PlanError;
use crate::store::{Db, Store, StoreError};
use crate::time::{from_millis, iso, now_millis};
use crate::webhooks::{auth_payload, AuthOperation, Event, Webhooks};
use crate::with_pool;

/// Refresh this long before expiry unless configured otherwise (Nango's margin).
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(15 * 60);
/// How long a node waits for another node's refresh of the same connection. Longer than a
/// token request may take, so a waiter only gives up on a holder that is stuck.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// The first retry after a failed refresh waits about this long; then twice as long each time.
const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// How far ahead of their margin the background task refreshes, so that a connection is
/// renewed by a scan before a request has to wait for it.
const SCAN_LOOKAHEAD: Duration = Duration::from_secs(5 * 60);

type Key = (String, String);

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("refreshing the credentials of connection `{connection}` failed: {source}")]
    Failed { connection: String, source: TokenError },
    #[error(
        "the credentials of connection `{connection}` expired and the last refresh failed ({error}); the next \
         attempt will be at {retry_at}, or re-authorize the connection"
    )]
    Backoff { connection: String, error: String, retry_at: String },
    #[error("connection `{0}` was deleted while it was being refreshed")]
    Gone(String),
    #[error("another gateway node is refreshing connection `{0}` and did not finish in time")]
    LockTimeout(String),
    #[error("the refresh of connection `{0}` stopped unexpectedly")]
    Aborted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RefreshError {
    pub fn status(&self) -> StatusCode {
        match self {
            RefreshError::Failed { .. } | RefreshError::Backoff { .. } => StatusCode::FAILED_DEPENDENCY,
            RefreshError::Gone(_) => StatusCode::NOT_FOUND,
            RefreshError::LockTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            RefreshError::Aborted(_) | RefreshError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            RefreshError::Failed { .. } => "refresh_token_external_error",
            RefreshError::Backoff { .. } => "connection_refresh_backoff",
            RefreshError::Gone(_) => "unknown_connection",
            RefreshError::LockTimeout(_) => "refresh_lock_timeout",
            RefreshError::Aborted(_) | RefreshError::Store(_) => "server_error",
        }
    }

    /// The message for an API answer; storage failures are logged, not shown.
    pub fn public_message(&self) -> String {
        match self {
            RefreshError::Store(e) => {
                tracing::error!("storage failure during a refresh: {e}");
                "the gateway could not read or write its database".to_string()
            }
            other => other.to_string(),
        }
    }
}

impl From<RefreshError> for PlanError {
    fn from(e: RefreshError) -> PlanError {
        PlanError::new(e.status(), e.code(), e.public_message())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    IfNeeded,
    Force,
}

/// The refresh machinery of one gateway process.
pub struct Refresher {
    store: Arc<Store>,
    webhooks: Arc<Webhooks>,
    http: reqwest::Client,
    locks: moka::sync::Cache<Key, Arc<tokio::sync::Mutex<()>>>,
}

impl Refresher {
    pub fn new(store: Arc<Store>, webhooks: Arc<Webhooks>) -> Arc<Refresher> {
        let locks = moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(600)).build();
        Arc::new(Refresher { store, webhooks, http: token::http_client(), locks })
    }

    /// `connection` with credentials valid for at least the margin: refreshed first when they
    /// would not be. Connections whose credentials do not expire, or cannot be refreshed, are
    /// returned as they are.
    pub async fn fresh(
        self: &Arc<Self>,
        integration: &Arc<Integration>,
        provider: &Arc<Provider>,
        connection: Arc<Connection>,
    ) -> Result<Arc<Connection>, RefreshError> {
        if !refreshable(&connection) || !expiring(&connection, margin(integration, provider), Utc::now()) {
            return Ok(connection);
        }
        self.refresh(integration, provider, connection, Mode::IfNeeded).await
    }

    /// Refreshes now, whatever the expiry: for when the provider rejected `connection`'s token
    /// (the proxy's retry after a 401) or `force_refresh` was asked. When the stored credentials
    /// already differ from `connection`'s (another request refreshed them meanwhile), those are
    /// returned without calling the provider again. Connections that cannot be refreshed are
    /// returned as they are.
    pub async fn force(
        self: &Arc<Self>,
        integration: &Arc<Integration>,
        provider: &Arc<Provider>,
        connection: Arc<Connection>,
    ) -> Result<Arc<Connection>, RefreshError> {
        if !refreshable(&connection) {
            return Ok(connection);
        }
        self.refresh(integration, provider, connection, Mode::Force).await
    }

    async fn refresh(
        self: &Arc<Self>,
        integration: &Arc<Integration>,
        provider: &Arc<Provider>,
        seen: Arc<Connection>,
        mode: Mode,
    ) -> Result<Arc<Connection>, RefreshError> {
        let this = Arc::clone(self);
        let (integration, provider) = (Arc::clone(integration), Arc::clone(provider));
        let name = seen.connection_id.clone();
        tokio::spawn(async move { this.critical(&integration, &provider, seen, mode).await })
            .await
            .map_err(|_| RefreshError::Aborted(name))?
    }

    async fn critical(
        &self,
        integration: &Integration,
        provider: &Provider,
        seen: Arc<Connection>,
        mode: Mode,
    ) -> Result<Arc<Connection>, RefreshError> {
        let key: Key = (seen.provider_config_key.clone(), seen.connection_id.clone());
        let margin = margin(integration, provider);
        let lock = self.locks.get_with(key.clone(), || Arc::new(tokio::sync::Mutex::new(())));
        let _in_process = lock.lock().await;
        // The caller before us in this process may have refreshed it.
        let current =
            self.store.connections.get(&key.0, &key.1).await?.ok_or_else(|| RefreshError::Gone(key.1.clone()))?;
        if settled(&current, &seen, mode, margin) {
            return Ok(current);
        }
        let across_nodes = match &self.store.db {
            Db::Postgres(pool) => match AdvisoryLock::acquire(pool, &key).await {
                Ok(lock) => Some(lock),
                Err(LockFailure::TimedOut) => {
                    let current = self.reread(&key).await?;
                    return if settled(&current, &seen, mode, margin) {
                        Ok(current)
                    } else {
                        Err(RefreshError::LockTimeout(key.1.clone()))
                    };
                }
                Err(LockFailure::Database(e)) => return Err(StoreError::Database(e).into()),
            },
            Db::Sqlite(_) => None,
        };
        let result = self.refresh_locked(integration, provider, &key, &seen, mode, margin).await;
        if let Some(lock) = across_nodes {
            lock.release().await;
        }
        result
    }

    /// The connection as stored, the cached copy dropped when it is out of date.
    async fn reread(&self, key: &Key) -> Result<Arc<Connection>, RefreshError> {
        let stored =
            self.store.connections.read(&key.0, &key.1).await?.ok_or_else(|| RefreshError::Gone(key.1.clone()))?;
        self.store.connections.forget(&key.0, &key.1);
        Ok(Arc::new(stored))
    }

    async fn refresh_locked(
        &self,
        integration: &Integration,
        provider: &Provider,
        key: &Key,
        seen: &Connection,
        mode: Mode,
        margin: chrono::Duration,
    ) -> Result<Arc<Connection>, RefreshError> {
        let current = self.reread(key).await?;
        if settled(&current, seen, mode, margin) {
            return Ok(current);
        }
        let state = state::read(&self.store.db, key).await?;
        let now = Utc::now();
        if mode == Mode::IfNeeded {
            if let (Some(error), Some(next)) = (&state.error, state.next_refresh_at.filter(|t| *t > now)) {
                // Backing off: a token that still works is better than none.
                if current.credentials.expires_at().is_some_and(|t| t > now) {
                    return Ok(current);
                }
                return Err(RefreshError::Backoff {
                    connection: key.1.clone(),
                    error: error.get("description").and_then(Value::as_str).unwrap_or_default().to_string(),
                    retry_at: iso(next),
                });
            }
        }
        let auth_mode = provider.auth_mode.map(|m| m.as_str()).unwrap_or(current.credentials.mode());
        match self.call(integration, provider, &current).await {
            Ok(tokens) => {
                let config = refreshed_config(&current, &tokens.metadata);
                let credentials = tokens.merge_into(&current.credentials);
                if !self.store.connections.replace_credentials(&key.0, &key.1, &credentials, config.as_ref()).await? {
                    return Err(RefreshError::Gone(key.1.clone()));
                }
                state::succeeded(&self.store.db, key).await?;
                tracing::info!(
                    integration = %key.0,
                    connection = %key.1,
                    expires_at = credentials.expires_at().map(iso).as_deref(),
                    "refreshed credentials"
                );
                let refreshed = self
                    .store
                    .connections
                    .get(&key.0, &key.1)
                    .await?
                    .ok_or_else(|| RefreshError::Gone(key.1.clone()))?;
                if state.error.is_some() {
                    let payload = auth_payload(&refreshed, auth_mode, AuthOperation::Refresh, None);
                    self.notify(&refreshed, payload).await;
                }
                Ok(refreshed)
            }
            Err(source) => {
                let attempts = state.attempts + 1;
                let wait = retry_delay(attempts, rand::thread_rng().gen_range(0.0..1.0));
                let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
                let error = json!({ "type": source.kind(), "description": source.to_string() });
                state::failed(&self.store.db, key, &error, attempts, next).await?;
                tracing::warn!(
                    integration = %key.0,
                    connection = %key.1,
                    attempts,
                    next_attempt = %iso(next),
                    "refreshing credentials failed: {source}"
                );
                if state.error.is_none() {
                    let payload = auth_payload(
                        &current,
                        auth_mode,
                        AuthOperation::Refresh,
                        Some((source.kind(), &source.to_string())),
                    );
                    self.notify(&current, payload).await;
                }
                // Still valid for a while: the caller is better served by it than by an error.
                if mode == Mode::IfNeeded && current.credentials.expires_at().is_some_and(|t| t > now) {
                    return Ok(current);
                }
                Err(RefreshError::Failed { connection: key.1.clone(), source })
            }
        }
    }

    async fn call(
        &self,
        integration: &Integration,
        provider: &Provider,
        connection: &Connection,
    ) -> Result<token::Tokens, TokenError> {
        let config = &connection.connection_config;
        match &connection.credentials {
            Credentials::OAuth2 { refresh_token: Some(refresh_token), config_override, .. } => {
                let text = |k: &str| config_override.as_ref().and_then(|o| o.get(k)).and_then(Value::as_str);
                let client = match (text("client_id"), text("client_secret")) {
                    (Some(id), Some(secret)) => Some(Client { id, secret }),
                    _ => None,
                };
                let grant = Grant::RefreshToken { refresh_token };
                token::request(&self.http, provider, integration, config, client, grant).await
            }
            Credentials::OAuth2Cc { client_id, client_secret, .. } => {
                let scopes: Vec<String> = match config.get("oauth_scopes").and_then(Value::as_str) {
                    Some(text) => crate::config::split_scopes(text),
                    None => integration.credentials.scopes.clone(),
                };
                let client = Some(Client { id: client_id, secret: client_secret });
                let grant = Grant::ClientCredentials { scopes: &scopes };
                token::request(&self.http, provider, integration, config, client, grant).await
            }
            Credentials::App { .. } => token::installation_token(&self.http, provider, integration, config).await,
            // Signed here: no provider call.
            Credentials::Jwt { fields, .. } => {
                let signed = super::jwt::sign(provider, fields, config, Utc::now())?;
                Ok(token::Tokens {
                    access_token: signed.token,
                    refresh_token: None,
                    expires_at: signed.expires_at,
                    token_type: None,
                    raw: Value::Null,
                    metadata: serde_json::Map::new(),
                })
            }
            Credentials::TwoStep { fields, refresh_token, .. } => {
                Ok(two_step::exchange(&self.http, provider, config, fields, refresh_token.as_deref()).await?)
            }
            other => Err(TokenError::Unsupported {
                provider: provider.name.clone(),
                what: format!("refreshing {} credentials", other.mode()),
            }),
        }
    }

    /// Mints the first installation token of a GitHub App connection.
    pub async fn app_credentials(
        &self,
        provider: &Provider,
        integration: &Integration,
        connection_config: &serde_json::Map<String, Value>,
    ) -> Result<Credentials, TokenError> {
        let tokens = token::installation_token(&self.http, provider, integration, connection_config).await?;
        Ok(Credentials::App { access_token: tokens.access_token, expires_at: tokens.expires_at, raw: tokens.raw })
    }

    async fn notify(&self, connection: &Connection, payload: Value) {
        if let Err(e) = self.webhooks.enqueue(Event::for_connection(connection, payload)).await {
            tracing::error!(connection = %connection.connection_id, "cannot store the refresh webhook: {e}");
        }
    }
}

/// Whether these credentials can be renewed without the user.
fn refreshable(connection: &Connection) -> bool {
    matches!(
        &connection.credentials,
        Credentials::OAuth2 { refresh_token: Some(_), .. }
            | Credentials::OAuth2Cc { .. }
            | Credentials::App { .. }
            | Credentials::Jwt { .. }
            | Credentials::TwoStep { .. }
    )
}

/// The connection config with what a refresh's response adds to it, when it adds anything.
fn refreshed_config(connection: &Connection, metadata: &Map<String, Value>) -> Option<Map<String, Value>> {
    (!metadata.is_empty()).then(|| {
        let mut config = connection.connection_config.clone();
        config.extend(metadata.clone());
        config
    })
}

/// The refresh margin: the integration's, else the provider's, else 15 minutes. For tokens
/// signed here (JWT) at most half their lifetime: one that lives shorter than the margin (Ghost's
/// live 5 minutes) would otherwise be signed and stored again on every use.
pub fn margin(integration: &Integration, provider: &Provider) -> chrono::Duration {
    let seconds = integration
        .refresh_margin_seconds
        .or(provider.refresh_margin_seconds)
        .or(provider.token_expiration_buffer.filter(|b| b.is_finite() && *b >= 0.0).map(|b| b as u64))
        .unwrap_or(DEFAULT_MARGIN.as_secs());
    let margin = chrono::Duration::seconds(seconds.min(i64::MAX as u64 / 1000) as i64);
    match super::jwt::lifetime(provider).filter(|_| provider.auth_mode == Some(crate::catalog::AuthMode::Jwt)) {
        Some(lifetime) => margin.min(lifetime / 2),
        None => margin,
    }
}

fn expiring(connection: &Connection, margin: chrono::Duration, now: DateTime<Utc>) -> bool {
    connection.credentials.expires_at().is_some_and(|at| at - now < margin)
}

/// Whether `current` is what the caller should use without a new refresh: someone else
/// refreshed since the caller read `seen`, or (unless forced) it no longer needs one.
fn settled(current: &Connection, seen: &Connection, mode: Mode, margin: chrono::Duration) -> bool {
    let now = Utc::now();
    let renewed = current.credentials != seen.credentials && !expiring(current, margin, now);
    renewed || (mode == Mode::IfNeeded && !expiring(current, margin, now))
}

/// The wait after failure number `attempts`: 30 s doubling to an hour, the upper half random.
fn retry_delay(attempts: i32, jitter: f64) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 20) as u32;
    let full = FIRST_RETRY.saturating_mul(2u32.pow(doublings)).min(MAX_RETRY);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

enum LockFailure {
    TimedOut,
    Database(sqlx::Error),
}

/// A PostgreSQL advisory lock on a connection of its own, which is closed when the lock is
/// let go (or dropped), so the lock can never outlive its holder.
struct AdvisoryLock {
    connection: PoolConnection<Postgres>,
    key: String,
}

impl AdvisoryLock {
    async fn acquire(pool: &sqlx::PgPool, key: &Key) -> Result<AdvisoryLock, LockFailure> {
        let mut connection = pool.acquire().await.map_err(LockFailure::Database)?;
        connection.close_on_drop();
        let name = format!("latchkey:refresh:{}:{}", key.0, key.1);
        sqlx::query("SELECT set_config('lock_timeout', $1, false)")
            .bind(format!("{}ms", LOCK_TIMEOUT.as_millis()))
            .execute(&mut *connection)
            .await
            .map_err(LockFailure::Database)?;
        match sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(&name)
            .execute(&mut *connection)
            .await
        {
            Ok(_) => Ok(AdvisoryLock { connection, key: name }),
            // 55P03: lock_not_available, the lock timeout ran out.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => Err(LockFailure::TimedOut),
            Err(e) => Err(LockFailure::Database(e)),
        }
    }

    async fn release(mut self) {
        if let Err(e) = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(&self.key)
            .execute(&mut *self.connection)
            .await
        {
            // Closing the connection below releases it anyway.
            tracing::warn!("cannot release a refresh lock: {e}");
        }
    }
}

/// Refreshes connections nearing expiry in the background, so that requests rarely wait for a
/// refresh. On several nodes each scans; the locks keep it to one refresh per connection.
pub fn spawn_background(app: Arc<App>, every: Duration) {
    tokio::spawn(async move {
        loop {
            // Nodes started together drift apart instead of scanning in step.
            let jitter = every.mul_f64(rand::thread_rng().gen_range(0.0..0.1));
            tokio::time::sleep(every + jitter).await;
            if let Err(e) = scan(&app).await {
                tracing::warn!("the background refresh scan failed: {e}");
            }
        }
    });
}

async fn scan(app: &Arc<App>) -> Result<(), StoreError> {
    let config = app.config.current();
    let horizon = Utc::now() + chrono::Duration::from_std(SCAN_LOOKAHEAD).unwrap_or_default();
    let longest_margin = app
        .integrations(&config)
        .iter()
        .filter_map(|i| config.catalog.get(&i.provider).map(|p| margin(i, p)))
        .max()
        .unwrap_or_else(|| chrono::Duration::from_std(DEFAULT_MARGIN).unwrap_or_default());
    for key in state::due(&app.store.db, horizon + longest_margin, 100).await? {
        let Some(integration) = app.integration(&config, &key.0) else { continue };
        let Some(provider) = config.catalog.get(&integration.provider).cloned() else { continue };
        let Some(connection) = app.store.connections.get(&key.0, &key.1).await? else { continue };
        // A JWT is signed in an instant when it is used; signing idle ones ahead would only write.
        if !refreshable(&connection) || matches!(connection.credentials, Credentials::Jwt { .. }) {
            // Nothing to do until the connection changes; look again tomorrow.
            state::park(&app.store.db, &key, Utc::now() + chrono::Duration::days(1)).await?;
            continue;
        }
        let lead = margin(&integration, &provider) + chrono::Duration::from_std(SCAN_LOOKAHEAD).unwrap_or_default();
        if !expiring(&connection, lead, Utc::now()) {
            continue;
        }
        if let Err(e) = app.refresh.force(&integration, &provider, connection).await {
            tracing::debug!("background refresh: {e}");
        }
    }
    Ok(())
}

/// The refresh state columns of a connection.
mod state {
    use super::*;

    #[derive(Debug, Default)]
    pub struct State {
        pub error: Option<Value>,
        pub attempts: i32,
        pub next_refresh_at: Option<DateTime<Utc>>,
    }

    pub async fn read(db: &Db, key: &Key) -> Result<State, StoreError> {
        let row: Option<(Option<String>, i32, Option<i64>)> = with_pool!(db, pool => {
            sqlx::query_as(
                "SELECT refresh_error, refresh_attempts, next_refresh_at FROM connections
                 WHERE provider_config_key = $1 AND connection_id = $2",
            )
            .bind(&key.0)
            .bind(&key.1)
            .fetch_optional(pool)
            .await?
        });
        let Some((error, attempts, next)) = row else { return Ok(State::default()) };
        Ok(State {
            error: error.as_deref().map(serde_json::from_str).transpose()?,
            attempts,
            next_refresh_at: next.map(from_millis),
        })
    }

    pub async fn succeeded(db: &Db, key: &Key) -> Result<(), StoreError> {
        with_pool!(db, pool => {
            sqlx::query(
                "UPDATE connections SET refresh_error = NULL, refresh_attempts = 0, next_refresh_at = NULL,
                    last_refresh_success_at = $3
                 WHERE provider_config_key = $1 AND connection_id = $2",
            )
            .bind(&key.0)
            .bind(&key.1)
            .bind(now_millis())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn failed(
        db: &Db,
        key: &Key,
        error: &Value,
        attempts: i32,
        next: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        with_pool!(db, pool => {
            sqlx::query(
                "UPDATE connections SET refresh_error = $3, refresh_attempts = $4, next_refresh_at = $5,
                    last_refresh_failure_at = $6
                 WHERE provider_config_key = $1 AND connection_id = $2",
            )
            .bind(&key.0)
            .bind(&key.1)
            .bind(error.to_string())
            .bind(attempts)
            .bind(next.timestamp_millis())
            .bind(now_millis())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Keeps the background scan away from a connection it cannot refresh.
    pub async fn park(db: &Db, key: &Key, until: DateTime<Utc>) -> Result<(), StoreError> {
        with_pool!(db, pool => {
            sqlx::query(
                "UPDATE connections SET next_refresh_at = $3
                 WHERE provider_config_key = $1 AND connection_id = $2 AND refresh_error IS NULL",
            )
            .bind(&key.0)
            .bind(&key.1)
            .bind(until.timestamp_millis())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Connections whose credentials expire before `horizon` and that are not backing off,
    /// soonest first.
    pub async fn due(db: &Db, horizon: DateTime<Utc>, limit: i64) -> Result<Vec<Key>, StoreError> {
        Ok(with_pool!(db, pool => {
            sqlx::query_as(
                "SELECT provider_config_key, connection_id FROM connections
                 WHERE credentials_expires_at IS NOT NULL AND credentials_expires_at < $1
                    AND (next_refresh_at IS NULL OR next_refresh_at <= $2)
                 ORDER BY credentials_expires_at LIMIT $3",
            )
            .bind(horizon.timestamp_millis())
            .bind(now_millis())
            .bind(limit)
            .fetch_all(pool)
            .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_jitter_up_to_an_hour() {
        assert_eq!(retry_delay(1, 1.0), Duration::from_secs(30));
        assert_eq!(retry_delay(1, 0.0), Duration::from_secs(15));
        assert_eq!(retry_delay(3, 1.0), Duration::from_secs(120));
        assert_eq!(retry_delay(50, 1.0), MAX_RETRY);
    }
}
