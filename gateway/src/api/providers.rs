//! `GET /providers`, `GET /providers/:provider` and the raw `GET /providers.json`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::extract::Query;
use crate::app::App;
use crate::auth::sessions::Caller;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    search: Option<String>,
}

pub async fn list(_: Caller, State(app): State<Arc<App>>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let config = app.config.current();
    let pattern =
        match q.search.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                Some(regex::RegexBuilder::new(s).case_insensitive(true).size_limit(1 << 16).build().map_err(|e| {
                    ApiError::invalid_query(format!("`search` is not a valid pattern: {e}"), &["search"])
                })?)
            }
        };
    let data: Vec<Value> = config
        .catalog
        .iter()
        .filter(|p| pattern.as_ref().is_none_or(|re| re.is_match(&p.name)))
        .map(|p| p.to_api(&app.server_url))
        .collect();
    Ok(Json(json!({ "data": data })))
}

pub async fn show(_: Caller, State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let config = app.config.current();
    let provider = config.catalog.get(&name).ok_or_else(|| ApiError::not_found(format!("Unknown provider {name}")))?;
    Ok(Json(json!({ "data": provider.to_api(&app.server_url) })))
}

/// The resolved catalog as one mapping, as Nango serves it without authentication.
pub async fn raw_catalog(State(app): State<Arc<App>>) -> Json<Value> {
    let config = app.config.current();
    let map: Map<String, Value> = config.catalog.iter().map(|p| (p.name.clone(), p.entry.clone())).collect();
    Json(Value::Object(map))
}
