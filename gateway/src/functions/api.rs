//! Actions as Nango's API has them: `POST /action/trigger` answers with the action's output as
//! is, or with `X-Async: true` at once with 202 and an id that `GET /action/:id` reads later, on
//! any node. An async action is a stored task ([`super::tasks`]): it outlives the node that
//! accepted it, and one that fails runs again up to `X-Max-Retries` times, after a growing
//! back-off.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::catalog::{Function, Kind};
use super::run::{invoke, Context, Failure, Limits};
use super::tasks;
use crate::api::error::Issue;
use crate::api::extract::{Body, SecretKey};
use crate::api::ApiError;
use crate::app::App;
use crate::config::Config;
use crate::connection::Connection;
use crate::records::api::ConnectionHeaders;
use crate::with_pool;

/// The most retries `X-Max-Retries` may ask for, as Nango.
const MAX_ACTION_RETRIES: u32 = 5;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/action/trigger", post(trigger)).route("/action/{id}", get(result))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    action_name: String,
    #[serde(default)]
    input: Value,
}

/// The function `name` of kind `kind` on the integration, or a 404 that says what exists.
pub fn find(config: &Config, integration: &str, name: &str, kind: Kind) -> Result<Arc<Function>, ApiError> {
    match config.functions.get(integration, name) {
        Some(f) if f.kind == kind => Ok(Arc::clone(f)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            if kind == Kind::Action { "unknown_action" } else { "unknown_sync" },
            format!("integration `{integration}` has no {} `{name}` in the configuration", kind.as_str()),
        )),
    }
}

/// The provider's pagination hints, for `paginate`.
pub fn paginate_hints(config: &Config, connection: &Connection) -> Option<Value> {
    config.catalog.get(&connection.provider).and_then(|p| p.proxy.as_ref()).and_then(|p| p.paginate.clone())
}

/// The context of one run of an action.
pub fn action_context(config: &Config, function: Arc<Function>, connection: Arc<Connection>, input: Value) -> Context {
    Context {
        paginate: paginate_hints(config, &connection),
        function,
        connection,
        input,
        run: None,
        save: true,
        limits: Limits::from_env(),
    }
}

async fn trigger(
    _: SecretKey,
    State(app): State<Arc<App>>,
    connection: ConnectionHeaders,
    headers: HeaderMap,
    Body(body): Body<TriggerBody>,
) -> Result<Response, ApiError> {
    let max_retries = max_retries(&headers)?;
    let config = app.config.current();
    let function = find(&config, &connection.provider_config_key, &body.action_name, Kind::Action)?;
    let connection = connection.connection(&app).await?;
    let is_async = headers.get("x-async").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !is_async {
        let finished = invoke(Arc::clone(&app), action_context(&config, function, connection, body.input)).await;
        return match finished.result {
            Ok(output) => Ok(Json(output).into_response()),
            Err(e) => Err(failure_response(&e.failure())),
        };
    }
    let id = uuid::Uuid::new_v4().to_string();
    tasks::enqueue(&app.store.db, &id, connection.id, &body.action_name, &body.input, max_retries).await?;
    tokio::spawn(tasks::start(Arc::clone(&app), id.clone()));
    let status_url = format!("/action/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url.clone())],
        Json(json!({ "id": id, "statusUrl": status_url })),
    )
        .into_response())
}

/// `X-Max-Retries`: how many times a failed async action runs again, 0 (the default) to 5. As
/// with Nango, a synchronous call accepts the header and is not retried.
fn max_retries(headers: &HeaderMap) -> Result<u32, ApiError> {
    let Some(value) = headers.get("x-max-retries") else { return Ok(0) };
    value.to_str().ok().and_then(|v| v.trim().parse::<u32>().ok()).filter(|n| *n <= MAX_ACTION_RETRIES).ok_or_else(
        || {
            let message = format!("X-Max-Retries must be a whole number from 0 to {MAX_ACTION_RETRIES}");
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_headers", message.clone()).with_issue(Issue::new(
                "invalid_value",
                message,
                &["x-max-retries"],
            ))
        },
    )
}

/// An action's failure as Nango reports it: 500 with the error's type and payload.
fn failure_response(failure: &Failure) -> ApiError {
    let code = match failure.kind.as_str() {
        "action_script_runtime_error" => "action_script_runtime_error",
        "execution_timeout" => "execution_timeout",
        "out_of_memory" => "out_of_memory",
        "output_too_large" => "script_output_too_large",
        "script_http_error" => "script_http_error",
        _ => "action_script_failure",
    };
    let error = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, failure.message.clone());
    match &failure.payload {
        Some(payload) => error.with_payload(payload.clone()),
        None => error,
    }
}

async fn result(_: SecretKey, State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let row: Option<(String, Option<String>)> = with_pool!(&app.store.db, pool => sqlx::query_as(
        "SELECT status, output FROM action_runs WHERE id = $1",
    )
    .bind(&id)
    .fetch_optional(pool)
    .await
    .map_err(crate::store::StoreError::from)?);
    let not_found = || ApiError::not_found(format!("No finished action with id `{id}`"));
    let (status, output) = row.ok_or_else(not_found)?;
    let output: Value = output
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(crate::store::StoreError::from)?
        .unwrap_or(Value::Null);
    match status.as_str() {
        "SUCCESS" => Ok(Json(output).into_response()),
        "FAILED" => {
            let failure = Failure {
                kind: output["type"].as_str().unwrap_or("action_script_failure").to_string(),
                message: output["message"].as_str().unwrap_or("the action failed").to_string(),
                payload: output.get("payload").cloned(),
                stack: None,
                response: None,
            };
            Err(failure_response(&failure))
        }
        _ => Err(not_found()),
    }
}
