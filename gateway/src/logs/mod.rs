//! The log store: one structured entry per proxied request, and the lines functions write,
//! in one table that `GET /logs` reads.
//!
//! Recording never waits: [`Logs::record`] puts the entry on a bounded queue and returns; one
//! background task writes whatever has queued up in a single multi-row insert, so a burst of
//! requests costs one round trip to the database, not one each. When the database falls so far
//! behind that the queue is full, entries are dropped (and counted) rather than slowing the
//! proxy down. Another task deletes entries older than the configured retention.
//!
//! Nothing secret goes in: callers write the caller's endpoint (never the upstream URL, which
//! may carry an interpolated key), no headers, no bodies, and errors in the gateway's words.

pub mod api;
mod query;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::{PgPool, QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::mpsc;

pub use query::{Filter, Page};

use crate::config::ConfigHandle;
use crate::store::{BeginWrite, Db, StoreError};
use crate::time::now_millis;
use crate::with_pool;

/// How many entries may wait for the writer before new ones are dropped.
const QUEUE: usize = 65_536;
/// The most entries the writer takes from the queue at once.
const BATCH: usize = 1_000;
/// The most rows one SQLite statement inserts. Batches vary in size, and a statement built for
/// each size had to be parsed anew every time (about half the writer's CPU) and filled the
/// statement cache with statements of thousands of parameters (the gateway's peak memory was
/// four times what it is without the writer).
const SQLITE_CHUNK: usize = 64;
/// How long the writer lets entries gather after the first one arrives: one insert (and one
/// wake-up of the writer) per interval instead of one per few requests; writing small batches
/// took about a quarter of the gateway's CPU in the benchmark.
const GATHER: Duration = Duration::from_millis(100);
/// How many expired entries one delete removes, so that pruning never holds a long lock.
const PRUNE_CHUNK: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Proxy,
    Function,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Proxy => "proxy",
            Kind::Function => "function",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "proxy" => Some(Kind::Proxy),
            "function" => Some(Kind::Function),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// One log entry. Proxy entries fill the request fields; a function's line needs only `kind`,
/// `level`, `message` and usually `integration`, `connection` and `operation`.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Milliseconds since the epoch.
    pub at: i64,
    pub kind: Kind,
    pub level: Level,
    pub message: String,
    pub integration: Option<String>,
    pub connection: Option<String>,
    /// Groups the lines of one function run (its name or run id).
    pub operation: Option<String>,
    pub method: Option<String>,
    /// The caller's endpoint, without the query string.
    pub path: Option<String>,
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub retries: u32,
    pub request_bytes: Option<u64>,
    pub response_bytes: Option<u64>,
    pub error: Option<String>,
}

impl Entry {
    /// An entry stamped now, every optional field empty.
    pub fn new(kind: Kind, level: Level, message: impl Into<String>) -> Entry {
        Entry {
            at: now_millis(),
            kind,
            level,
            message: message.into(),
            integration: None,
            connection: None,
            operation: None,
            method: None,
            path: None,
            status: None,
            latency_ms: None,
            retries: 0,
            request_bytes: None,
            response_bytes: None,
            error: None,
        }
    }

    /// Replaces every occurrence of each of `secrets` in the free-text fields with `REDACTED`,
    /// for text that may quote a credential (a function's own message, an upstream's words).
    pub fn redact(mut self, secrets: &[&str]) -> Entry {
        for field in [Some(&mut self.message), self.path.as_mut(), self.error.as_mut()].into_iter().flatten() {
            for secret in secrets.iter().filter(|s| s.len() >= 4) {
                if field.contains(secret) {
                    *field = field.replace(secret, "REDACTED");
                }
            }
        }
        self
    }
}

/// The log store's public face.
pub struct Logs {
    queue: mpsc::Sender<Entry>,
    dropped: AtomicU64,
    db: Db,
}

impl Logs {
    /// Starts the writer and the pruner on the current Tokio runtime. Retention is read from the
    /// configuration on every pass, so a reload changes it.
    pub fn start(db: Db, config: Arc<ConfigHandle>) -> Arc<Logs> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(db.clone(), receiver));
        tokio::spawn(prune(db.clone(), config));
        Arc::new(Logs { queue, dropped: AtomicU64::new(0), db })
    }

    /// Queues `entry` for writing; never waits.
    pub fn record(&self, entry: Entry) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(entry) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "the log store cannot keep up with the database; log entries were dropped");
            }
        }
    }

    /// One page of entries, newest first.
    pub async fn query(&self, filter: &Filter) -> Result<Page, StoreError> {
        query::run(&self.db, filter).await
    }
}

async fn write_batches(db: Db, mut receiver: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        // While the writer sleeps, senders queue without waking it.
        tokio::time::sleep(GATHER).await;
        loop {
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            if let Err(e) = insert(&db, &batch).await {
                tracing::warn!(entries = batch.len(), "cannot write log entries: {e}");
            }
            let full = batch.len() == BATCH;
            batch.clear();
            if !full {
                break;
            }
        }
    }
}

async fn insert(db: &Db, batch: &[Entry]) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(pool) => insert_postgres(pool, batch).await,
        Db::Sqlite(pool) => insert_sqlite(pool, batch).await,
    }
}

const INSERT: &str = "INSERT INTO logs (created_at, kind, level, message, integration, connection, operation, \
    method, path, status, latency_ms, retries, request_bytes, response_bytes, error) ";

fn as_i64(n: Option<u64>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

fn as_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The whole batch in one statement whose text never changes, so it is prepared once.
async fn insert_postgres(pool: &PgPool, batch: &[Entry]) -> Result<(), sqlx::Error> {
    let text = |field: fn(&Entry) -> Option<&str>| batch.iter().map(field).collect::<Vec<_>>();
    let number = |field: fn(&Entry) -> Option<i64>| batch.iter().map(field).collect::<Vec<_>>();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{INSERT} SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
             $7::text[], $8::text[], $9::text[], $10::int[], $11::bigint[], $12::int[], $13::bigint[], $14::bigint[],
             $15::text[])"
    )))
    .bind(number(|e| Some(e.at)))
    .bind(text(|e| Some(e.kind.as_str())))
    .bind(text(|e| Some(e.level.as_str())))
    .bind(text(|e| Some(e.message.as_str())))
    .bind(text(|e| e.integration.as_deref()))
    .bind(text(|e| e.connection.as_deref()))
    .bind(text(|e| e.operation.as_deref()))
    .bind(text(|e| e.method.as_deref()))
    .bind(text(|e| e.path.as_deref()))
    .bind(batch.iter().map(|e| e.status.map(i32::from)).collect::<Vec<_>>())
    .bind(number(|e| as_i64(e.latency_ms)))
    .bind(batch.iter().map(|e| as_i32(e.retries)).collect::<Vec<_>>())
    .bind(number(|e| as_i64(e.request_bytes)))
    .bind(number(|e| as_i64(e.response_bytes)))
    .bind(text(|e| e.error.as_deref()))
    .execute(pool)
    .await?;
    Ok(())
}

/// The batch in one transaction, as chunks of [`SQLITE_CHUNK`] rows and the rest in chunks of
/// decreasing powers of two: eight statement texts in all, each prepared once and cached.
async fn insert_sqlite(pool: &SqlitePool, batch: &[Entry]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_write().await?;
    let mut rest = batch;
    while !rest.is_empty() {
        let size = if rest.len() >= SQLITE_CHUNK { SQLITE_CHUNK } else { 1 << rest.len().ilog2() };
        let (chunk, tail) = rest.split_at(size);
        let mut q = QueryBuilder::<Sqlite>::new(INSERT);
        q.push_values(chunk, |mut row, e| {
            row.push_bind(e.at)
                .push_bind(e.kind.as_str())
                .push_bind(e.level.as_str())
                .push_bind(e.message.as_str())
                .push_bind(e.integration.as_deref())
                .push_bind(e.connection.as_deref())
                .push_bind(e.operation.as_deref())
                .push_bind(e.method.as_deref())
                .push_bind(e.path.as_deref())
                .push_bind(e.status.map(i32::from))
                .push_bind(as_i64(e.latency_ms))
                .push_bind(as_i32(e.retries))
                .push_bind(as_i64(e.request_bytes))
                .push_bind(as_i64(e.response_bytes))
                .push_bind(e.error.as_deref());
        });
        q.build().execute(&mut *tx).await?;
        rest = tail;
    }
    tx.commit().await
}

async fn prune(db: Db, config: Arc<ConfigHandle>) {
    loop {
        let retention = config.current().log_retention;
        let cutoff = now_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        loop {
            let deleted = with_pool!(&db, pool => sqlx::query(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE created_at < $1 LIMIT $2)",
            )
            .bind(cutoff)
            .bind(PRUNE_CHUNK)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()));
            match deleted {
                Ok(n) if n as i64 == PRUNE_CHUNK => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("cannot delete expired log entries: {e}");
                    break;
                }
            }
        }
        // Often enough that a short retention (as tests use) is honoured closely.
        tokio::time::sleep((retention / 4).clamp(Duration::from_millis(500), Duration::from_secs(60))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_every_free_text_field() {
        let mut e = Entry::new(Kind::Function, Level::Info, "token tok_12345 sent");
        e.path = Some("/users/tok_12345".into());
        e.error = Some("rejected tok_12345".into());
        let e = e.redact(&["tok_12345", "ab"]);
        assert_eq!(e.message, "token REDACTED sent");
        assert_eq!(e.path.as_deref(), Some("/users/REDACTED"));
        assert_eq!(e.error.as_deref(), Some("rejected REDACTED"));
    }
}
