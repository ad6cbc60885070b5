//! `GET /records`, as Nango's: the connection in headers, the model and paging in the query.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::{decode_cursor, Action, Dataset, ListQuery, Page, Records, MAX_PAGE};
use crate::api::extract::{Query, SecretKey};
use crate::api::ApiError;
use crate::app::App;
use crate::connection::Connection;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/records", get(list))
}

/// The connection a request names with `Provider-Config-Key` and `Connection-Id`.
pub struct ConnectionHeaders {
    pub provider_config_key: String,
    pub connection_id: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ConnectionHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let header = |name: &str| {
            parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).ok_or_else(
                || {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "missing_headers",
                        format!("The `{name}` header is required"),
                    )
                },
            )
        };
        Ok(ConnectionHeaders {
            provider_config_key: header("provider-config-key")?.to_string(),
            connection_id: header("connection-id")?.to_string(),
        })
    }
}

impl ConnectionHeaders {
    pub async fn connection(&self, app: &App) -> Result<Arc<Connection>, ApiError> {
        app.store.connections.get(&self.provider_config_key, &self.connection_id).await?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_connection",
                format!(
                    "There is no connection `{}` for integration `{}`",
                    self.connection_id, self.provider_config_key
                ),
            )
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    model: Option<String>,
    variant: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    modified_after: Option<String>,
    /// The older name of `modified_after`.
    delta: Option<String>,
    filter: Option<String>,
    ids: Option<Value>,
}

async fn list(
    _: SecretKey,
    State(app): State<Arc<App>>,
    headers: ConnectionHeaders,
    Query(q): Query<RecordsQuery>,
) -> Result<Json<Page>, ApiError> {
    let model =
        q.model.filter(|m| !m.is_empty()).ok_or_else(|| ApiError::invalid_query("`model` is required", &["model"]))?;
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(text) => text.parse::<i64>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
            ApiError::invalid_query(format!("`limit` must be a whole number from 1 to {MAX_PAGE}"), &["limit"])
        })?,
    };
    let after_seq = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(cursor) => Some(
            decode_cursor(cursor)
                .map_err(|_| ApiError::invalid_query("`cursor` is not a cursor this gateway returned", &["cursor"]))?,
        ),
        None => None,
    };
    let modified_after = match q.modified_after.or(q.delta).filter(|m| !m.is_empty()) {
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(&text)
                .map_err(|_| ApiError::invalid_query("`modified_after` must be an ISO 8601 date", &["modified_after"]))?
                .timestamp_millis(),
        ),
        None => None,
    };
    let query =
        ListQuery { after_seq, modified_after, actions: actions(q.filter.as_deref())?, ids: ids(q.ids)?, limit };
    let connection = headers.connection(&app).await?;
    let dataset = Dataset::new(connection.id, &model, q.variant.as_deref());
    let page = Records::new(app.store.db.clone()).list(&dataset, &query).await.map_err(|e| {
        tracing::error!("cannot read records of {}: {e}", dataset.model);
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the gateway could not read the records")
    })?;
    Ok(Json(page))
}

/// `filter=added,updated` and friends: the union of the named actions.
fn actions(filter: Option<&str>) -> Result<Vec<Action>, ApiError> {
    let Some(filter) = filter.filter(|f| !f.is_empty()) else { return Ok(Vec::new()) };
    filter
        .split(',')
        .map(|part| match part.trim().to_ascii_lowercase().as_str() {
            "added" => Ok(Action::Added),
            "updated" => Ok(Action::Updated),
            "deleted" => Ok(Action::Deleted),
            other => Err(ApiError::invalid_query(
                format!("`filter` takes added, updated and deleted, comma-separated, not `{other}`"),
                &["filter"],
            )),
        })
        .collect()
}

/// `ids=a&ids=b`, `ids[]=a` or `ids=a,b`: at most 100 external ids.
fn ids(value: Option<Value>) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = match value {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(_) => return Err(ApiError::invalid_query("`ids` must be a list of record ids", &["ids"])),
    };
    if list.len() > 100 || list.iter().any(|id| id.chars().count() > 256) {
        return Err(ApiError::invalid_query("`ids` takes at most 100 ids of at most 256 characters", &["ids"]));
    }
    Ok(list)
}
