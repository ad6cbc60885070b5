//! `GET /logs`: the log store, filtered, newest first, a page at a time.
//!
//! Parameters: `type` (proxy, function), `integration` (comma-separated keys), `connection`,
//! `operation`, `level`, `status` (`404` or `5xx`), `failed=true`, `from` and `to` (ISO 8601 or
//! epoch milliseconds), `limit` (1–1000, default 100) and `cursor` (the `next_cursor` of the
//! previous page). The answer is `{"logs": [...], "next_cursor": "…" | null}`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::query::{Cursor, Filter, StatusFilter};
use super::{Kind, Level};
use crate::api::extract::{flag, Query, SecretKey};
use crate::api::ApiError;
use crate::app::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    integration: Option<String>,
    connection: Option<String>,
    operation: Option<String>,
    level: Option<String>,
    status: Option<String>,
    failed: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = Filter {
        kind: parsed(q.kind, "type", Kind::parse, "proxy or function")?,
        integrations: q
            .integration
            .map(|keys| keys.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        connection: q.connection.filter(|c| !c.is_empty()),
        operation: q.operation.filter(|o| !o.is_empty()),
        level: parsed(q.level, "level", Level::parse, "debug, info, warn or error")?,
        status: parsed(q.status, "status", StatusFilter::parse, "a status code such as 404, or a class such as 5xx")?,
        failed: flag(&q.failed, "failed")?,
        from: parsed(q.from, "from", instant, "an ISO 8601 time or epoch milliseconds")?,
        to: parsed(q.to, "to", instant, "an ISO 8601 time or epoch milliseconds")?,
        limit: parsed(q.limit, "limit", |t| t.parse().ok().filter(|n| (1..=1000).contains(n)), "from 1 to 1000")?
            .unwrap_or(100),
        cursor: parsed(q.cursor, "cursor", Cursor::decode, "the next_cursor of a previous page")?,
    };
    let page = app.logs.query(&filter).await?;
    Ok(Json(json!({ "logs": page.entries, "next_cursor": page.next_cursor })))
}

fn parsed<T>(
    value: Option<String>,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => parse(text)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_query(format!("`{name}` must be {expected}, not `{text}`"), &[name])),
    }
}

fn instant(text: &str) -> Option<i64> {
    let value = match text.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::String(text.to_string()),
    };
    crate::time::parse_instant(&value).map(|t| t.timestamp_millis())
}
