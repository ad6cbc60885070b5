//! Connections from credentials the end user types in, no redirect involved:
//! `POST /api-auth/api-key/:key`, `POST /api-auth/basic/:key`, `POST /auth/two-step/:key`,
//! `POST /auth/jwt/:key` and `POST /auth/unauthenticated/:key`. Credentials are checked against
//! the provider before they are stored.

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
    check_fields(&flow, &fields)?;
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

/// `POST /auth/jwt/:key`: the end user's key (and whatever else the entry's templates read),
/// which signs a token here; the token is checked with the provider's verification call.
pub async fn jwt(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(key): Path<String>,
    query: FlowQuery,
    Body(mut fields): Body<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let flow = begin(&app, &key, &query, &[AuthMode::Jwt]).await?;
    // The frontend SDK sends the mode along with the fields.
    fields.remove("type");
    check_fields(&flow, &fields)?;
    let fields = super::jwt::split_pairs(&flow.provider, fields);
    let signed = super::jwt::sign(&flow.provider, &fields, &flow.connection_config, chrono::Utc::now())
        .map_err(|e| e.into_api(&flow.provider.name, &[]))?;
    create(&app, &auth, &flow, signed.into_credentials(fields)).await
}

/// The end user's fields against the entry's `credentials` form: required ones given, text
/// matching its pattern.
fn check_fields(flow: &Flow, fields: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, field) in &flow.provider.credentials {
        let title = field.title.as_deref().unwrap_or(name);
        match fields.get(name) {
            None | Some(Value::Null) if !field.optional => {
                return Err(ApiError::invalid_body(format!("{title} is required"), &[name]))
            }
            Some(Value::String(text)) if text.is_empty() && !field.optional => {
                return Err(ApiError::invalid_body(format!("{title} is required"), &[name]))
            }
            Some(Value::String(text)) if !text.is_empty() && !field.accepts(text) => {
                return Err(ApiError::invalid_body(format!("{title} does not have the expected form"), &[name]));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `POST /auth/:kind/:key` for the credential flows Latchkey does not run (`bill`, `tba`,
/// `signature`, `aws-sigv4`, …): a clear refusal naming the provider's mode.
pub async fn unsupported(
    State(app): State<Arc<App>>,
    Path((kind, key)): Path<(String, String)>,
    query: FlowQuery,
) -> Result<Json<Value>, ApiError> {
    refuse(&app, &key, &query, &kind).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentialsBody {
    client_id: String,
    client_secret: Option<String>,
    client_certificate: Option<String>,
    client_private_key: Option<String>,
}

/// `POST /oauth2/auth/:key`: the end user's own OAuth client, exchanged for a token with the
/// client-credentials grant ([`super::token`]), stored as OAUTH2_CC credentials.
pub async fn client_credentials(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(key): Path<String>,
    query: FlowQuery,
    Body(body): Body<ClientCredentialsBody>,
) -> Result<Json<Value>, ApiError> {
    let flow = begin(&app, &key, &query, &[AuthMode::OAuth2Cc]).await?;
    flow.check_connection_config()?;
    bounded(&body.client_id, "client_id", 1)?;
    let secret = body.client_secret.unwrap_or_default();
    if secret.is_empty() {
        // A private_key_jwt client signs an assertion instead, which Latchkey does not build.
        return Err(ApiError::invalid_body("client_secret is required", &["client_secret"]));
    }
    let scopes = match flow.connection_config.get("oauth_scopes").and_then(Value::as_str) {
        Some(list) => crate::config::split_scopes(list),
        None => flow.integration.credentials.scopes.clone(),
    };
    let client = super::token::Client { id: &body.client_id, secret: &secret };
    let grant = super::token::Grant::ClientCredentials { scopes: &scopes };
    let tokens = super::token::request(
        &auth.http,
        &flow.provider,
        &flow.integration,
        &flow.connection_config,
        Some(client),
        grant,
    )
    .await
    .map_err(|e| {
        tracing::info!(provider = %flow.provider.name, kind = e.kind(), "client credentials refused: {e}");
        ApiError::new(axum::http::StatusCode::BAD_REQUEST, "connection_test_failed", e.to_string())
    })?;
    let mut config = flow.connection_config.clone();
    config.extend(tokens.metadata.clone());
    let template = Credentials::OAuth2Cc {
        token: String::new(),
        expires_at: None,
        client_id: body.client_id,
        client_secret: secret,
        client_certificate: body.client_certificate,
        client_private_key: body.client_private_key,
        raw: Value::Null,
    };
    let (connection, _) = flow.finish(&app, tokens.merge_into(&template), config).await?;
    Ok(Json(json!({
        "connectionId": connection.connection_id,
        "providerConfigKey": connection.provider_config_key,
    })))
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
