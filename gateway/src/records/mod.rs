//! The records cache syncs write and `GET /records` reads.
//!
//! A dataset is one model (with its variant) of one connection. Each change to a record takes
//! the dataset's next sequence number, and writers of a dataset queue on its `record_datasets`
//! row, so numbers are handed out in commit order: a reader that resumes after the last number it
//! saw never misses a change. An unchanged record (same content hash) keeps its number, so it
//! does not show up again after a cursor or `modified_after`. A change's time is taken under the
//! same lock and never goes back along the numbers, so `modified_after` is a range of numbers too.

pub mod api;
mod write;

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

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

/// A page of records, each with its `_nango_metadata`, in the shape `GET /records` answers.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    /// Each record as Nango returns it, as JSON text: the stored record with `id` and
    /// `_nango_metadata`.
    pub records: Vec<Box<RawValue>>,
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
        let (sql, args) = page_query(dataset, query, !self.db.is_postgres());
        let rows = with_pool!(&self.db, pool => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for arg in args {
                q = match arg {
                    Arg::Int(n) => q.bind(n),
                    Arg::Text(text) => q.bind(text),
                };
            }
            q.fetch_all(pool).await?
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
        let records = rows.iter().map(StoredRow::to_api).collect::<Result<_, _>>()?;
        Ok(Page { records, next_cursor })
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

/// The parameters of the page query, numbered in the order they are bound.
#[derive(Default)]
struct Params(Vec<Arg>);

enum Arg {
    Int(i64),
    Text(String),
}

impl Params {
    /// Adds a parameter and returns its placeholder; SQLite and PostgreSQL both read `$n`.
    fn bind(&mut self, arg: Arg) -> String {
        self.0.push(arg);
        format!("${}", self.0.len())
    }
}

/// The page query, written so that each part reads one index range in `seq` order and stops
/// after a page (see migration 0006): the cursor bounds `seq`; `modified_after` bounds it too,
/// at the first record modified since, because modification times never go back along `seq`
/// (see `write::Head`); each action of a `filter` reads its own range, and the ranges are
/// merged by `seq`. One row more than the limit tells whether there is a next page.
///
/// SQLite is told which index each part reads: with statistics (after an ANALYZE) it estimates
/// a `seq` range as a fixed share of the dataset and an action as a third of it, and then scans
/// the cursor index for a rare action or sorts every record modified since. With `ids`, it
/// chooses well (the unique index).
fn page_query(dataset: &Dataset, query: &ListQuery, sqlite: bool) -> (String, Vec<Arg>) {
    let mut params = Params::default();
    params.bind(Arg::Int(dataset.connection));
    params.bind(Arg::Text(dataset.model.clone()));
    params.bind(Arg::Int(query.limit + 1));
    let mut conditions = String::from("connection = $1 AND model = $2");
    if let Some(seq) = query.after_seq {
        conditions += &format!(" AND seq > {}", params.bind(Arg::Int(seq)));
    }
    if let Some(time) = query.modified_after {
        let time = params.bind(Arg::Int(time));
        conditions += &format!(
            " AND last_modified_at >= {time} AND seq >= (SELECT seq FROM records
                 WHERE connection = $1 AND model = $2 AND last_modified_at >= {time}
                 ORDER BY last_modified_at, seq LIMIT 1)"
        );
    }
    if !query.ids.is_empty() {
        let ids: Vec<String> = query.ids.iter().map(|id| params.bind(Arg::Text(id.clone()))).collect();
        conditions += &format!(" AND external_id IN ({})", ids.join(", "));
    }
    let mut actions: Vec<&'static str> = query.actions.iter().map(|a| a.as_str()).collect();
    actions.sort_unstable();
    actions.dedup();
    let per_action: Vec<(&str, String)> = match actions.len() {
        // No filter, or one that names every action.
        0 | 3 => vec![("records_by_cursor", String::new())],
        _ => actions
            .into_iter()
            .map(|action| {
                ("records_by_action", format!(" AND last_action = {}", params.bind(Arg::Text(action.to_string()))))
            })
            .collect(),
    };
    let mut branches: Vec<String> = per_action
        .iter()
        .map(|(index, action)| {
            let index = if sqlite && query.ids.is_empty() { format!(" INDEXED BY {index}") } else { String::new() };
            format!(
                "SELECT external_id, data, seq, first_seen_at, last_modified_at, deleted_at, pruned_at, last_action
                 FROM records{index} WHERE {conditions}{action} ORDER BY seq LIMIT $3"
            )
        })
        .collect();
    let sql = match branches.len() {
        1 => branches.pop().unwrap_or_default(),
        _ => {
            let merged: Vec<String> =
                branches.iter().enumerate().map(|(i, branch)| format!("SELECT * FROM ({branch}) AS b{i}")).collect();
            format!("{} ORDER BY seq LIMIT $3", merged.join(" UNION ALL "))
        }
    };
    (sql, params.0)
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
    /// The record as the API returns it. A page holds up to 10,000 records, so the stored text is
    /// spliced rather than parsed into values and serialised again: only its top-level keys are
    /// read, and each value is copied as it was stored.
    fn to_api(&self) -> Result<Box<RawValue>, serde_json::Error> {
        let fields = match serde_json::from_str::<TopLevel<'_>>(&self.data) {
            Ok(fields) => fields.0,
            Err(e) => {
                tracing::warn!(record = %self.external_id, "a stored record is not a JSON object ({e}); only its id is returned");
                Vec::new()
            }
        };
        let mut out = String::with_capacity(self.data.len() + 320);
        out.push('{');
        let mut id_written = false;
        for (key, value) in &fields {
            let value = match key.as_ref() {
                "_nango_metadata" => continue,
                "id" => {
                    id_written = true;
                    Cow::Owned(json_string(&self.external_id)?)
                }
                _ => Cow::Borrowed(value.get()),
            };
            push_field(&mut out, key, &value)?;
        }
        if !id_written {
            push_field(&mut out, "id", &json_string(&self.external_id)?)?;
        }
        let time = |ms: i64| format!("\"{}\"", iso(from_millis(ms)));
        let maybe_time = |ms: Option<i64>| ms.map(time).unwrap_or_else(|| "null".into());
        let metadata = format!(
            "{{\"first_seen_at\":{},\"last_modified_at\":{},\"last_action\":{},\"deleted_at\":{},\"pruned_at\":{},\"cursor\":\"{}\"}}",
            time(self.first_seen_at),
            time(self.last_modified_at),
            json_string(&self.last_action)?,
            maybe_time(self.deleted_at),
            maybe_time(self.pruned_at),
            encode_cursor(self.seq),
        );
        push_field(&mut out, "_nango_metadata", &metadata)?;
        out.push('}');
        RawValue::from_string(out)
    }
}

/// `"key":value` after a comma when the object already has a field.
fn push_field(out: &mut String, key: &str, value: &str) -> Result<(), serde_json::Error> {
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&json_string(key)?);
    out.push(':');
    out.push_str(value);
    Ok(())
}

/// `text` as a JSON string, quoted and escaped.
fn json_string(text: &str) -> Result<String, serde_json::Error> {
    serde_json::to_string(text)
}

/// The top-level fields of a stored record, in stored order, their values left as text.
struct TopLevel<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<TopLevel<'de>, M::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    fields.push((key.0, map.next_value()?));
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A key borrowed from the stored text unless it has escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

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
