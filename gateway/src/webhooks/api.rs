//! `GET /webhooks/deliveries`, `GET /webhooks/deliveries/:id` and
//! `POST /webhooks/deliveries/:id/replay`, with the API secret key.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ListFilter, Status};
use crate::api::extract::{Query, SecretKey};
use crate::api::ApiError;
use crate::app::App;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    provider_config_key: Option<String>,
    connection_id: Option<String>,
    limit: Option<String>,
}

pub async fn list(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = q
        .status
        .map(|s| {
            Status::parse(&s)
                .ok_or_else(|| ApiError::invalid_query("`status` is pending, delivered or failed", &["status"]))
        })
        .transpose()?;
    let limit = match q.limit {
        None => 100,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::invalid_query("`limit` must be a whole number from 1 to 1000", &["limit"]))?,
    };
    let filter = ListFilter {
        status,
        event_type: q.event_type,
        provider_config_key: q.provider_config_key,
        connection_id: q.connection_id,
        limit,
    };
    let deliveries = app.webhooks.list(&filter).await?;
    Ok(Json(json!({ "deliveries": deliveries.iter().map(|d| d.to_api()).collect::<Vec<_>>() })))
}

fn delivery_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(format!("There is no webhook delivery `{text}`")))
}

pub async fn show(_: SecretKey, State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let delivery = app
        .webhooks
        .get(delivery_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("There is no webhook delivery `{id}`")))?;
    Ok(Json(delivery.to_api()))
}

pub async fn replay(_: SecretKey, State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let delivery = app
        .webhooks
        .replay(delivery_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("There is no webhook delivery `{id}`")))?;
    Ok((StatusCode::ACCEPTED, Json(delivery.to_api())).into_response())
}
