//! Stored deliveries: inserted before sending, claimed by one node at a time, updated after
//! every attempt.

use serde_json::{json, Value};
use sqlx::QueryBuilder;

use crate::store::{Db, StoreError, Tx};
use crate::time::{from_millis, iso, now_millis};
use crate::{with_pool, with_tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Delivered,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "pending" => Some(Status::Pending),
            "delivered" => Some(Status::Delivered),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub event_type: String,
    pub url: String,
    pub body: String,
    pub provider_config_key: Option<String>,
    pub connection_id: Option<String>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub window_started_at: i64,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

impl Delivery {
    /// As the API shows it; a password in the URL is hidden.
    pub fn to_api(&self) -> Value {
        let pending = self.status == Status::Pending.as_str();
        json!({
            "id": self.id,
            "type": self.event_type,
            "url": crate::store::redact_url(&self.url),
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": pending.then(|| iso(from_millis(self.next_attempt_at))),
            "last_status": self.last_status,
            "last_error": self.last_error,
            "provider_config_key": self.provider_config_key,
            "connection_id": self.connection_id,
            "created_at": iso(from_millis(self.created_at)),
            "updated_at": iso(from_millis(self.updated_at)),
            "delivered_at": self.delivered_at.map(|t| iso(from_millis(t))),
            "payload": serde_json::from_str::<Value>(&self.body).unwrap_or(Value::Null),
        })
    }
}

const COLUMNS: &str = "id, event_type, url, body, provider_config_key, connection_id, status, attempts,
    next_attempt_at, window_started_at, last_status, last_error, created_at, updated_at, delivered_at";

/// A delivery to store: one event to one URL.
pub(super) struct NewDelivery {
    pub event_type: String,
    pub url: String,
    pub body: String,
    pub provider_config_key: Option<String>,
    pub connection_id: Option<String>,
}

/// Stores deliveries in `tx`; the worker sees them once it commits.
pub(super) async fn insert(tx: &mut Tx, new: &[NewDelivery]) -> Result<(), StoreError> {
    let now = now_millis();
    with_tx!(tx, conn => {
        for delivery in new {
            sqlx::query(
                "INSERT INTO webhook_deliveries (event_type, url, body, provider_config_key, connection_id, status,
                    next_attempt_at, window_started_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $6, $6)",
            )
            .bind(&delivery.event_type)
            .bind(&delivery.url)
            .bind(&delivery.body)
            .bind(&delivery.provider_config_key)
            .bind(&delivery.connection_id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
    });
    Ok(())
}

/// Filters of `GET /webhooks/deliveries`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub event_type: Option<String>,
    pub provider_config_key: Option<String>,
    pub connection_id: Option<String>,
    pub limit: i64,
}

pub(super) async fn list(db: &Db, filter: &ListFilter) -> Result<Vec<Delivery>, StoreError> {
    Ok(with_pool!(db, pool => {
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE 1 = 1"));
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(kind) = &filter.event_type {
            q.push(" AND event_type = ").push_bind(kind);
        }
        if let Some(key) = &filter.provider_config_key {
            q.push(" AND provider_config_key = ").push_bind(key);
        }
        if let Some(id) = &filter.connection_id {
            q.push(" AND connection_id = ").push_bind(id);
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(filter.limit);
        q.build_query_as().fetch_all(pool).await?
    }))
}

pub(super) async fn get(db: &Db, id: i64) -> Result<Option<Delivery>, StoreError> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1"));
    Ok(with_pool!(db, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await?))
}

pub(super) async fn replay(db: &Db, id: i64) -> Result<Option<Delivery>, StoreError> {
    let now = now_millis();
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $2, window_started_at = $2,
            claimed_until = NULL, updated_at = $2
         WHERE id = $1 RETURNING {COLUMNS}"
    ));
    Ok(with_pool!(db, pool => sqlx::query_as(sql).bind(id).bind(now).fetch_optional(pool).await?))
}

/// Takes up to `limit` due deliveries for this node until `lease_until`. On PostgreSQL rows
/// another node is claiming are skipped, not waited for.
pub(super) async fn claim(db: &Db, now: i64, lease_until: i64, limit: i64) -> Result<Vec<Delivery>, StoreError> {
    let lock = if db.is_postgres() { " FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET claimed_until = $2
         WHERE id IN (
            SELECT id FROM webhook_deliveries
            WHERE status = 'pending' AND next_attempt_at <= $1 AND (claimed_until IS NULL OR claimed_until < $1)
            ORDER BY next_attempt_at LIMIT $3{lock})
         RETURNING {COLUMNS}"
    ));
    Ok(with_pool!(db, pool => sqlx::query_as(sql).bind(now).bind(lease_until).bind(limit).fetch_all(pool).await?))
}

/// Lets go of every claim: with SQLite this process is the only sender, so claims left by a
/// previous run are stale.
pub(super) async fn release_all(db: &Db) -> Result<(), StoreError> {
    with_pool!(db, pool => {
        sqlx::query("UPDATE webhook_deliveries SET claimed_until = NULL WHERE claimed_until IS NOT NULL")
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// What one attempt came to.
pub(super) struct Attempt {
    pub status: Status,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub next_attempt_at: i64,
}

pub(super) async fn record(db: &Db, id: i64, attempt: &Attempt) -> Result<(), StoreError> {
    let now = now_millis();
    with_pool!(db, pool => {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt_at = $3,
                last_status = $4, last_error = $5, updated_at = $6, claimed_until = NULL,
                delivered_at = CASE WHEN $2 = 'delivered' THEN $6 ELSE delivered_at END
             WHERE id = $1",
        )
        .bind(id)
        .bind(attempt.status.as_str())
        .bind(attempt.next_attempt_at)
        .bind(attempt.http_status.map(i32::from))
        .bind(&attempt.error)
        .bind(now)
        .execute(pool)
        .await?;
    });
    Ok(())
}
