//! The records cache syncs write and `GET /records` reads.
//!
//! A dataset is one model (with its variant) of one connection. Each change to a record takes
//! the dataset's next sequence number, and writers of a dataset queue on its `record_datasets`
//! row, so numbers are handed out in commit order: a reader that resumes after the last number it
//! saw never misses a change. An unchanged record (same content hash) keeps its number, so it
//! does not show up again after a cursor or `modified_after`.

pub mod api;
mod write;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::{QueryBuilder, Row};

use crate::store::Db;
use crate::time::{from_millis, iso};
use crate::with_pool;

pub use write::Summary;

/// The most records one page of `GET /records` returns.
pub const MAX_PAGE: i64 = 10_000;
/// The longest external id a record may have.
const MAX_ID_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("record {index} of the batch for model `{model}` {reason}")]
    InvalidRecord { model: String, index: usize, reason: &'static str },
    #[error("the cursor is not one this gateway issued")]
    InvalidCursor,
    #[error("a stored record is not valid JSON ({0}); the row was written by something other than Latchkey")]
    Corrupt(#[from] serde_json::Error),
}

/// One model (and variant) of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dataset {
    /// The connection's internal id.
    pub connection: i64,
    /// `Model`, or `Model::variant` for a variant other than `base`.
    pub model: String,
}

impl Dataset {
    pub fn new(connection: i64, model: &str, variant: Option<&str>) -> Dataset {
        let model = match variant.filter(|v| !v.is_empty() && *v != "base") {
            Some(v) => format!("{model}::{v}"),
            None => model.to_string(),
        };
        Dataset { connection, model }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Added,
    Updated,
    Deleted,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Added => "ADDED",
            Action::Updated => "UPDATED",
            Action::Deleted => "DELETED",
        }
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub after_seq: Option<i64>,
    pub modified_after: Option<i64>,
    pub actions: Vec<Action>,
    pub ids: Vec<String>,
    pub limit: i64,
}

/// A page of records, each with its `_nango_metadata`.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Value>,
    pub next_cursor: Option<String>,
}

/// The records store; cheap to create from the database handle.
pub struct Records {
    db: Db,
}

impl Records {
    pub fn new(db: Db) -> Records {
        Records { db }
    }

    /// A page in change order.
    pub async fn list(&self, dataset: &Dataset, query: &ListQuery) -> Result<Page, RecordsError> {
        let rows = with_pool!(&self.db, pool => {
            let mut q = QueryBuilder::new(
                "SELECT external_id, data, seq, first_seen_at, last_modified_at, deleted_at, pruned_at, last_action
                 FROM records WHERE connection = ",
            );
            q.push_bind(dataset.connection).push(" AND model = ").push_bind(&dataset.model);
            if let Some(seq) = query.after_seq {
                q.push(" AND seq > ").push_bind(seq);
            }
            if let Some(t) = query.modified_after {
                q.push(" AND last_modified_at >= ").push_bind(t);
            }
            if !query.actions.is_empty() && query.actions.len() < 3 {
                let mut list = q.push(" AND last_action IN (").separated(", ");
                for action in &query.actions {
                    list.push_bind(action.as_str());
                }
                q.push(")");
            }
            if !query.ids.is_empty() {
                let mut list = q.push(" AND external_id IN (").separated(", ");
                for id in &query.ids {
                    list.push_bind(id);
                }
                q.push(")");
            }
            // One more than asked tells whether there is a next page.
            q.push(" ORDER BY seq LIMIT ").push_bind(query.limit + 1);
            q.build().fetch_all(pool).await?
                .into_iter()
                .map(|row| -> Result<StoredRow, sqlx::Error> {
                    Ok(StoredRow {
                        external_id: row.try_get(0)?,
                        data: row.try_get(1)?,
                        seq: row.try_get(2)?,
                        first_seen_at: row.try_get(3)?,
                        last_modified_at: row.try_get(4)?,
                        deleted_at: row.try_get(5)?,
                        pruned_at: row.try_get(6)?,
                        last_action: row.try_get(7)?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        });
        let more = rows.len() as i64 > query.limit;
        let rows = &rows[..rows.len().min(query.limit as usize)];
        let next_cursor = if more { rows.last().map(|r| encode_cursor(r.seq)) } else { None };
        Ok(Page { records: rows.iter().map(StoredRow::to_api).collect(), next_cursor })
    }

    /// How many records a dataset holds, deleted ones excluded.
    pub async fn count(&self, dataset: &Dataset) -> Result<i64, RecordsError> {
        Ok(with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM records WHERE connection = $1 AND model = $2 AND deleted_at IS NULL",
        )
        .bind(dataset.connection)
        .bind(&dataset.model)
        .fetch_one(pool)
        .await?))
    }

    /// Removes every record of a dataset (a full resync that empties the cache first).
    pub async fn clear(&self, dataset: &Dataset) -> Result<(), RecordsError> {
        with_pool!(&self.db, pool => sqlx::query("DELETE FROM records WHERE connection = $1 AND model = $2")
            .bind(dataset.connection)
            .bind(&dataset.model)
            .execute(pool)
            .await
            .map(|_| ())?);
        Ok(())
    }

    /// Drops the payload of deleted records that were deleted before `before` (milliseconds);
    /// their metadata rows stay so that cursors keep working. Returns how many were pruned.
    pub async fn prune_deleted(&self, before: i64, now: i64) -> Result<u64, RecordsError> {
        let done = with_pool!(&self.db, pool => sqlx::query(
            "UPDATE records SET data = '{}', pruned_at = $1
             WHERE deleted_at IS NOT NULL AND deleted_at < $2 AND pruned_at IS NULL",
        )
        .bind(now)
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done)
    }
}

struct StoredRow {
    external_id: String,
    data: String,
    seq: i64,
    first_seen_at: i64,
    last_modified_at: i64,
    deleted_at: Option<i64>,
    pruned_at: Option<i64>,
    last_action: String,
}

impl StoredRow {
    fn to_api(&self) -> Value {
        let mut record = match serde_json::from_str::<Value>(&self.data) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        record.insert("id".into(), Value::String(self.external_id.clone()));
        let time = |ms: i64| Value::String(iso(from_millis(ms)));
        let mut meta = Map::new();
        meta.insert("first_seen_at".into(), time(self.first_seen_at));
        meta.insert("last_modified_at".into(), time(self.last_modified_at));
        meta.insert("last_action".into(), Value::String(self.last_action.clone()));
        meta.insert("deleted_at".into(), self.deleted_at.map(time).unwrap_or(Value::Null));
        meta.insert("pruned_at".into(), self.pruned_at.map(time).unwrap_or(Value::Null));
        meta.insert("cursor".into(), Value::String(encode_cursor(self.seq)));
        record.insert("_nango_metadata".into(), Value::Object(meta));
        Value::Object(record)
    }
}

/// Cursors are opaque to clients; they carry the sequence number of the last record read.
pub fn encode_cursor(seq: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("lk1:{seq}"))
}

pub fn decode_cursor(cursor: &str) -> Result<i64, RecordsError> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .map_err(|_| RecordsError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| RecordsError::InvalidCursor)?;
    text.strip_prefix("lk1:").and_then(|n| n.parse().ok()).ok_or(RecordsError::InvalidCursor)
}

/// A record's external id: its `id`, a non-empty string of at most 255 characters or a number.
fn external_id(record: &Map<String, Value>) -> Result<String, &'static str> {
    match record.get("id") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_ID_LEN => Ok(s.replace('\0', "")),
        Some(Value::String(_)) => Err("has an `id` that is empty or longer than 255 characters"),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err("has an `id` that is neither a string nor a number"),
        None => Err("has no `id`"),
    }
}

/// The content hash that decides whether a write changes a record.
fn content_hash(json: &str) -> String {
    let digest = Sha256::digest(json.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
