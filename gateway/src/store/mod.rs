//! Storage: SQLite (the default, one node) or PostgreSQL (any number of nodes), the migrations
//! for each, and encryption of credentials at rest.
//!
//! Queries are written once, in SQL both databases read the same way (`$1` parameters, `ON
//! CONFLICT`, `RETURNING`), and run on whichever pool is configured through [`with_pool!`].
//! Times are milliseconds since the epoch and JSON is text, so a row means the same on both.

pub mod connections;
pub mod crypto;
pub mod integrations;
#[cfg(test)]
pub mod scratch;
pub mod settings;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use connections::Connections;
pub use crypto::{CryptoError, KeyRing, Sealed};
pub use integrations::Integrations;

/// Runs `$body` with `$pool` bound to the configured pool, whichever database it is.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to the connection of the transaction `$tx` (a `&mut Tx`),
/// whichever database it is on.
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// A write transaction on either database, for changes in several parts (a result and the
/// webhooks that announce it) that must commit together. Dropped without [`Tx::commit`], it
/// rolls back.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// Begins a transaction that is going to write. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes fails with
/// SQLITE_BUSY, without waiting for the busy timeout, when another connection wrote in between.
pub trait BeginWrite {
    type Database: sqlx::Database;

    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("a stored value is not valid JSON ({0}); the row was written by something other than Latchkey")]
    Json(#[from] serde_json::Error),
    #[error(
        "the database holds values sealed with encryption key(s) {0}, which are not configured. \
         Set LATCHKEY_ENCRYPTION_KEY to the key they were written with (and any older keys in \
         LATCHKEY_PREVIOUS_ENCRYPTION_KEYS)"
    )]
    UnknownKeys(String),
    #[error("DATABASE_URL `{0}` names neither SQLite (sqlite://…) nor PostgreSQL (postgres://…)")]
    UnknownScheme(String),
    #[error("cannot create the directory for the SQLite database `{path}`: {source}")]
    CreateDir { path: String, source: std::io::Error },
}

impl Db {
    /// Opens the database, creating a SQLite file (and its directory) on first use.
    pub async fn connect(url: &str) -> Result<Db, StoreError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            if let Some(dir) = Path::new(options.get_filename()).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|source| StoreError::CreateDir { path: dir.display().to_string(), source })?;
            }
            let pool = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool =
                PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(StoreError::UnknownScheme(redact_url(url)))
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Begins a write transaction (see [`BeginWrite`]).
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin_write().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin_write().await?),
        })
    }

    /// Applies the migrations embedded in the binary.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_to(i64::MAX).await
    }

    /// Applies the embedded migrations up to `version`: tests start from an older schema with it
    /// to check that a migration keeps what was stored.
    pub(crate) async fn migrate_to(&self, version: i64) -> Result<(), StoreError> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run_to(version, pool).await?,
            Db::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run_to(version, pool).await?,
        }
        Ok(())
    }
}

/// A database URL with its password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Everything stored, behind one handle.
pub struct Store {
    pub db: Db,
    pub keys: Arc<KeyRing>,
    pub integrations: Integrations,
    pub connections: Connections,
}

/// The PostgreSQL channel on which nodes tell each other what changed.
const CHANGES_CHANNEL: &str = "latchkey_changes";

impl Store {
    /// Opens the store; refuses when stored values were sealed with keys the ring lacks, so that
    /// a wrong key is caught at start rather than on the first read.
    pub async fn open(db: Db, keys: KeyRing) -> Result<Arc<Store>, StoreError> {
        let unknown = unknown_key_ids(&db, &keys).await?;
        if !unknown.is_empty() {
            return Err(StoreError::UnknownKeys(unknown.join(", ")));
        }
        let keys = Arc::new(keys);
        let integrations = Integrations::load(db.clone(), Arc::clone(&keys)).await?;
        let connections = Connections::new(db.clone(), Arc::clone(&keys));
        Ok(Arc::new(Store { db, keys, integrations, connections }))
    }

    /// Listens for other nodes' changes and drops the cached copies they make stale.
    pub fn spawn_change_listener(self: &Arc<Self>) {
        let Db::Postgres(pool) = &self.db else { return };
        let pool = pool.clone();
        let store = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(CHANGES_CHANNEL).await {
                            tracing::warn!("cannot listen for changes from other nodes: {e}");
                        } else {
                            // Anything may have changed while the listener was away.
                            store.connections.forget_all();
                            store.reload_integrations().await;
                            loop {
                                match listener.recv().await {
                                    Ok(n) => store.apply(Change::decode(n.payload())).await,
                                    Err(e) => {
                                        tracing::warn!("lost the change listener: {e}; reconnecting");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!("cannot connect the change listener: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn apply(&self, change: Option<Change>) {
        match change {
            Some(Change::Connection { provider_config_key, connection_id }) => {
                self.connections.forget(&provider_config_key, &connection_id)
            }
            Some(Change::Integrations) => self.reload_integrations().await,
            None => {}
        }
    }

    async fn reload_integrations(&self) {
        if let Err(e) = self.integrations.reload().await {
            tracing::warn!("cannot reload integrations after a change: {e}");
        }
    }
}

/// Key ids found on stored ciphertexts that `keys` cannot open.
async fn unknown_key_ids(db: &Db, keys: &KeyRing) -> Result<Vec<String>, StoreError> {
    let ids: Vec<String> = with_pool!(db, pool => sqlx::query_scalar(
        "SELECT credentials_key_id FROM connections
         UNION SELECT credentials_key_id FROM integrations WHERE credentials_key_id IS NOT NULL
         UNION SELECT key_id FROM settings WHERE key_id IS NOT NULL"
    )
    .fetch_all(pool)
    .await?);
    Ok(ids.into_iter().filter(|id| !keys.knows(id)).collect())
}

/// Tells other nodes that something changed (PostgreSQL only; one SQLite file has one node).
pub(crate) async fn announce(db: &Db, change: &Change) {
    if let Db::Postgres(pool) = db {
        if let Err(e) =
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES_CHANNEL).bind(change.encode()).execute(pool).await
        {
            tracing::warn!("cannot notify other nodes of a change: {e}");
        }
    }
}

/// What changed, as nodes tell each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Connection { provider_config_key: String, connection_id: String },
    Integrations,
}

impl Change {
    fn encode(&self) -> String {
        match self {
            Change::Connection { provider_config_key, connection_id } => {
                serde_json::json!(["connection", provider_config_key, connection_id]).to_string()
            }
            Change::Integrations => serde_json::json!(["integrations"]).to_string(),
        }
    }

    fn decode(payload: &str) -> Option<Change> {
        let parts: Vec<String> = serde_json::from_str(payload).ok()?;
        match parts.as_slice() {
            [kind, key, id] if kind == "connection" => {
                Some(Change::Connection { provider_config_key: key.clone(), connection_id: id.clone() })
            }
            [kind] if kind == "integrations" => Some(Change::Integrations),
            _ => None,
        }
    }
}
