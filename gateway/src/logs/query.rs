//! Reading the log store: filters, newest first, with a cursor that stays valid while new
//! entries arrive (it names the last entry seen, not an offset).

use base64::Engine as _;
use serde_json::{json, Value};

use crate::store::{Db, StoreError};
use crate::time::{from_millis, iso};
use crate::with_pool;

/// Which entries to read. Every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<super::Kind>,
    pub integrations: Vec<String>,
    pub connection: Option<String>,
    pub operation: Option<String>,
    pub level: Option<super::Level>,
    pub status: Option<StatusFilter>,
    /// Only entries that failed: an error, a level of error, or a status of 400 or more.
    pub failed: bool,
    /// Milliseconds since the epoch, inclusive.
    pub from: Option<i64>,
    /// Milliseconds since the epoch, exclusive.
    pub to: Option<i64>,
    pub limit: i64,
    pub cursor: Option<Cursor>,
}

/// `404` or a class such as `5xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(u16),
    Class(u16),
}

impl StatusFilter {
    pub fn parse(text: &str) -> Option<StatusFilter> {
        let bytes = text.as_bytes();
        match bytes {
            [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Some(StatusFilter::Class(u16::from(c - b'0'))),
            _ => text.parse().ok().filter(|n| (100..=599).contains(n)).map(StatusFilter::Exact),
        }
    }
}

/// The position after the last entry of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(i64);

impl Cursor {
    pub fn encode(self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("log:{}", self.0))
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        text.strip_prefix("log:")?.parse().ok().map(Cursor)
    }
}

pub struct Page {
    pub entries: Vec<Value>,
    pub next_cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    created_at: i64,
    kind: String,
    level: String,
    message: String,
    integration: Option<String>,
    connection: Option<String>,
    operation: Option<String>,
    method: Option<String>,
    path: Option<String>,
    status: Option<i32>,
    latency_ms: Option<i64>,
    retries: i32,
    request_bytes: Option<i64>,
    response_bytes: Option<i64>,
    error: Option<String>,
}

impl Row {
    fn to_api(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "created_at": iso(from_millis(self.created_at)),
            "type": self.kind,
            "level": self.level,
            "message": self.message,
            "integration": self.integration,
            "connection": self.connection,
            "operation": self.operation,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "retries": self.retries,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "error": self.error,
        })
    }
}

pub(super) async fn run(db: &Db, filter: &Filter) -> Result<Page, StoreError> {
    // One more than asked tells whether another page follows.
    let fetch = filter.limit + 1;
    let mut rows: Vec<Row> = with_pool!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT id, created_at, kind, level, message, integration, connection, operation, method, path, status, \
             latency_ms, retries, request_bytes, response_bytes, error FROM logs WHERE 1 = 1",
        );
        if let Some(kind) = filter.kind {
            q.push(" AND kind = ").push_bind(kind.as_str());
        }
        if !filter.integrations.is_empty() {
            q.push(" AND integration IN (");
            let mut list = q.separated(", ");
            for key in &filter.integrations {
                list.push_bind(key);
            }
            q.push(")");
        }
        if let Some(connection) = &filter.connection {
            q.push(" AND connection = ").push_bind(connection);
        }
        if let Some(operation) = &filter.operation {
            q.push(" AND operation = ").push_bind(operation);
        }
        if let Some(level) = filter.level {
            q.push(" AND level = ").push_bind(level.as_str());
        }
        match filter.status {
            Some(StatusFilter::Exact(code)) => {
                q.push(" AND status = ").push_bind(i32::from(code));
            }
            Some(StatusFilter::Class(class)) => {
                q.push(" AND status >= ").push_bind(i32::from(class) * 100);
                q.push(" AND status < ").push_bind(i32::from(class) * 100 + 100);
            }
            None => {}
        }
        if filter.failed {
            q.push(" AND (error IS NOT NULL OR level = 'error' OR status >= 400)");
        }
        if let Some(from) = filter.from {
            q.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            q.push(" AND created_at < ").push_bind(to);
        }
        if let Some(Cursor(after)) = filter.cursor {
            q.push(" AND id < ").push_bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(fetch);
        q.build_query_as().fetch_all(pool).await?
    });
    let more = rows.len() as i64 > filter.limit;
    rows.truncate(usize::try_from(filter.limit).unwrap_or(0));
    let next_cursor = if more { rows.last().map(|r| Cursor(r.id).encode()) } else { None };
    Ok(Page { entries: rows.iter().map(Row::to_api).collect(), next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor(42);
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("bm9wZQ"), None);
        assert_eq!(Cursor::decode("!!"), None);
    }

    #[test]
    fn status_filters_read_codes_and_classes() {
        assert_eq!(StatusFilter::parse("404"), Some(StatusFilter::Exact(404)));
        assert_eq!(StatusFilter::parse("5xx"), Some(StatusFilter::Class(5)));
        assert_eq!(StatusFilter::parse("6xx"), None);
        assert_eq!(StatusFilter::parse("99"), None);
        assert_eq!(StatusFilter::parse("abc"), None);
    }
}
