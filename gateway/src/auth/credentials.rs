//! Connections from credentials the end user types in, no redirect involved:
//! `POST /api-auth/api-key/:key`, `POST /api-auth/basic/:key` and
//! `POST /auth/unauthenticated/:key`. Credentials are checked against the provider before they
//! are stored.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::flow::{begin, Flow, FlowQuery};
use super::verify::verify;
use super::AuthState;
use crate::api::error::ApiError;
use crate::api::extract::Body;
use crate::app::App;
use crate::catalog::AuthMode;
use crate::connection::Credentials;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyBody {
    #[serde(rename = "apiKey")]
    api_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoBody {}

fn bounded(value: &str, field: &str, min: usize) -> Result<(), ApiError> {
    if value.len() < min || value.len() > 1024 {
        return Err(ApiError::invalid_body(format!("must be {min} to 1024 characters"), &[field]));
    }
    Ok(())
}

pub async fn api_key(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(key): Path<String>,
    query: FlowQuery,
    Body(body): Body<ApiKeyBody>,
) -> Result<Json<Value>, ApiError> {
    let flow = begin(&app, &key, &query, &[AuthMode::ApiKey]).await?;
    bounded(&body.api_key, "apiKey", 1)?;
    create(&app, &auth, &flow, Credentials::ApiKey { api_key: body.api_key }).await
}

pub async fn basic(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(key): Path<String>,
    query: FlowQuery,
    Body(body): Body<BasicBody>,
) -> Result<Json<Value>, ApiError> {
    let flow = begin(&app, &key, &query, &[AuthMode::Basic]).await?;
    bounded(&body.username, "username", 0)?;
    bounded(&body.password, "password", 0)?;
    create(&app, &auth, &flow, Credentials::Basic { username: body.username, password: body.password }).await
}

pub async fn unauthenticated(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(key): Path<String>,
    query: FlowQuery,
    Body(_): Body<NoBody>,
) -> Result<Json<Value>, ApiError> {
    let flow = begin(&app, &key, &query, &[AuthMode::None]).await?;
    create(&app, &auth, &flow, Credentials::None).await
}

/// `POST /auth/two-step/:key`: the end user's fields, traded for a token at the provider.
pub async fn two_step(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(key): Path<String>,
    query: FlowQuery,
    Body(mut fields): Body<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let flow = begin(&app, &key, &query, &[AuthMode::TwoStep]).await?;
    flow.check_connection_config()?;
    // The frontend SDK sends the mode along with the fields.
    fields.remove("type");
    for (name, field) in &flow.provider.credentials {
        let given = fields.get(name).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
        if !given && !field.optional {
            let title = field.title.as_deref().unwrap_or(name);
            return Err(ApiError::invalid_body(format!("{title} is required"), &[name]));
        }
    }
    let credentials =
        super::two_step::request(&auth.http, &flow.provider, &flow.connection_config, &fields).await.map_err(|e| {
            tracing::info!(provider = %flow.provider.name, "two-step credentials refused: {e}");
            ApiError::new(axum::http::StatusCode::BAD_REQUEST, "connection_test_failed", e.to_string())
        })?;
    let (connection, _) = flow.finish(&app, credentials, flow.connection_config.clone()).await?;
    Ok(Json(json!({
        "connectionId": connection.connection_id,
        "providerConfigKey": connection.provider_config_key,
    })))
}

/// `POST /auth/:kind/:key` for the credential flows Latchkey does not run (`bill`, `tba`, `jwt`,
/// `two-step`, `signature`, `aws-sigv4`, …): a clear refusal naming the provider's mode.
pub async fn unsupported(
    State(app): State<Arc<App>>,
    Path((kind, key)): Path<(String, String)>,
    query: FlowQuery,
) -> Result<Json<Value>, ApiError> {
    refuse(&app, &key, &query, &kind).await
}

/// `POST /oauth2/auth/:key` (client credentials from the end user).
pub async fn unsupported_oauth2_cc(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    query: FlowQuery,
) -> Result<Json<Value>, ApiError> {
    refuse(&app, &key, &query, "oauth2").await
}

async fn refuse(app: &App, key: &str, query: &FlowQuery, kind: &str) -> Result<Json<Value>, ApiError> {
    // Authenticates and resolves first, so that the answer names the provider's real mode.
    let flow = begin(app, key, query, &[]).await?;
    Err(ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "invalid_auth_mode",
        format!(
            "`/{kind}` does not create connections for provider `{}`, which uses {}",
            flow.provider.name,
            flow.provider.auth_mode.map(|m| m.as_str()).unwrap_or("NONE")
        ),
    ))
}

/// Validates the config, verifies the credentials with the provider, and stores the connection.
async fn create(app: &App, auth: &AuthState, flow: &Flow, credentials: Credentials) -> Result<Json<Value>, ApiError> {
    flow.check_connection_config()?;
    let draft = flow.draft(credentials);
    verify(&auth.http, &flow.provider, &flow.integration, &draft).await?;
    let config: Map<String, Value> = draft.connection_config.clone();
    let (connection, _) = flow.finish(app, draft.credentials, config).await?;
    Ok(Json(json!({
        "connectionId": connection.connection_id,
        "providerConfigKey": connection.provider_config_key,
    })))
}
