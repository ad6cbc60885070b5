//! Connect sessions: a backend creates one with its secret key and hands the token to its
//! frontend, which may then create connections for that end user only, for the integrations the
//! session allows, for 30 minutes. Only a hash of the token is stored.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::api::connections::{validate_tags, EndUserBody, OrganizationBody};
use crate::api::error::{ApiError, Issue};
use crate::api::extract::{bearer, Body, SecretKey};
use crate::app::App;
use crate::catalog::template::hex;
use crate::connection::{EndUser, Organization};
use crate::store::{Db, StoreError};
use crate::time::{from_millis, iso, now_millis};
use crate::with_pool;

/// What every session token starts with.
pub const TOKEN_PREFIX: &str = "nango_connect_session_";
/// How long a session lives.
pub const LIFETIME: Duration = Duration::minutes(30);

/// A connect session as stored (JSON in the `data` column).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectSession {
    #[serde(default)]
    pub end_user: Option<EndUser>,
    #[serde(default)]
    pub allowed_integrations: Option<Vec<String>>,
    #[serde(default)]
    pub integrations_config_defaults: Option<Map<String, Value>>,
    #[serde(default)]
    pub overrides: Option<Map<String, Value>>,
    #[serde(default)]
    pub webhook_url_override: Option<String>,
    /// Explicit tags; the end user's derived tags are added when a connection is made.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// For a reconnect session: the connection whose credentials it replaces.
    #[serde(default)]
    pub reconnect: Option<Reconnect>,
    #[serde(skip)]
    pub token_hash: String,
    #[serde(skip)]
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reconnect {
    pub provider_config_key: String,
    pub connection_id: String,
}

impl ConnectSession {
    /// Whether the session lets its holder connect `key`.
    pub fn allows(&self, key: &str) -> bool {
        let allowed = self.allowed_integrations.as_ref().is_none_or(|list| list.iter().any(|k| k == key));
        let reconnect_fits = self.reconnect.as_ref().is_none_or(|r| r.provider_config_key == key);
        allowed && reconnect_fits
    }

    /// The defaults the backend set for `key` (`connection_config`, `authorization_params`,
    /// `user_scopes`).
    pub fn defaults(&self, key: &str) -> Option<&Map<String, Value>> {
        self.integrations_config_defaults.as_ref()?.get(key)?.as_object()
    }

    /// The tags a connection made through this session gets: the end user's, then the explicit ones.
    pub fn connection_tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.end_user.as_ref().map(EndUser::derived_tags).unwrap_or_default();
        tags.extend(self.tags.clone());
        tags
    }
}

/// Makes a new random token: the prefix and 64 hex digits (256 bits).
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Stores `session` under a fresh token; returns the token.
pub async fn insert(db: &Db, session: &ConnectSession) -> Result<(String, DateTime<Utc>), StoreError> {
    let token = new_token();
    let now = Utc::now();
    let expires_at = now + LIFETIME;
    let data = serde_json::to_string(session)?;
    with_pool!(db, pool => {
        sqlx::query("DELETE FROM connect_sessions WHERE expires_at < $1").bind(now.timestamp_millis()).execute(pool).await?;
        sqlx::query("INSERT INTO connect_sessions (token_hash, data, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(hash(&token))
            .bind(&data)
            .bind(now.timestamp_millis())
            .bind(expires_at.timestamp_millis())
            .execute(pool)
            .await?;
    });
    Ok((token, expires_at))
}

/// The live session behind `token`, if any.
pub async fn find(db: &Db, token: &str) -> Result<Option<ConnectSession>, StoreError> {
    let token_hash = hash(token);
    let row: Option<(String, i64)> = with_pool!(db, pool => {
        sqlx::query_as("SELECT data, expires_at FROM connect_sessions WHERE token_hash = $1 AND expires_at > $2")
            .bind(&token_hash)
            .bind(now_millis())
            .fetch_optional(pool)
            .await?
    });
    let Some((data, expires_at)) = row else { return Ok(None) };
    let mut session: ConnectSession = serde_json::from_str(&data)?;
    session.token_hash = token_hash;
    session.expires_at = from_millis(expires_at);
    Ok(Some(session))
}

pub async fn delete(db: &Db, token_hash: &str) -> Result<(), StoreError> {
    with_pool!(db, pool => {
        sqlx::query("DELETE FROM connect_sessions WHERE token_hash = $1").bind(token_hash).execute(pool).await?;
    });
    Ok(())
}

/// Resolves a presented session token: a malformed or unknown one is a 401 in Nango's words.
pub async fn authenticate(app: &App, token: &str) -> Result<ConnectSession, ApiError> {
    let well_formed = token
        .strip_prefix(TOKEN_PREFIX)
        .is_some_and(|rest| rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if !well_formed {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_connect_session_token_format",
            "The connect session token is malformed; create one with POST /connect/sessions",
        ));
    }
    find(&app.store.db, token).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown_connect_session_token",
            "The connect session token is unknown or has expired (sessions live 30 minutes); create a new one",
        )
    })
}

/// A connect session presented as `Authorization: Bearer nango_connect_session_…`.
pub struct Session(pub ConnectSession);

impl FromRequestParts<Arc<App>> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        authenticate(app, token).await.map(Session)
    }
}

/// Who called an endpoint that takes either the secret key or a session token (the Connect UI
/// lists integrations and reads providers with its session).
pub enum Caller {
    Backend,
    Session(Box<ConnectSession>),
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        // A session-shaped token is never tried as a secret key, as in Nango.
        if token.starts_with(TOKEN_PREFIX) {
            return authenticate(app, token).await.map(|s| Caller::Session(Box::new(s)));
        }
        SecretKey::from_request_parts(parts, app).await.map(|_| Caller::Backend)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    end_user: Option<EndUserBody>,
    organization: Option<OrganizationBody>,
    allowed_integrations: Option<Vec<String>>,
    integrations_config_defaults: Option<Map<String, Value>>,
    overrides: Option<Map<String, Value>>,
    webhook_url_override: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectBody {
    connection_id: String,
    integration_id: String,
    end_user: Option<EndUserBody>,
    organization: Option<OrganizationBody>,
    integrations_config_defaults: Option<Map<String, Value>>,
    overrides: Option<Map<String, Value>>,
    webhook_url_override: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

/// The parts both kinds of session share, validated.
struct Common {
    end_user: Option<EndUserBody>,
    organization: Option<OrganizationBody>,
    integrations_config_defaults: Option<Map<String, Value>>,
    overrides: Option<Map<String, Value>>,
    webhook_url_override: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

fn build(app: &App, common: Common) -> Result<ConnectSession, ApiError> {
    if common.end_user.is_none() && common.tags.is_none() {
        return Err(ApiError::invalid_body("`end_user` is required unless `tags` are given", &["end_user"]));
    }
    let mut end_user = common.end_user.map(|u| u.validate("end_user")).transpose()?;
    if let Some(org) = common.organization {
        if org.id.is_empty() || org.id.len() > 255 {
            return Err(ApiError::invalid_body("must be 1 to 255 characters", &["organization", "id"]));
        }
        let organization = Organization { id: org.id, display_name: org.display_name };
        match &mut end_user {
            Some(user) => user.organization = Some(organization),
            None => {
                return Err(ApiError::invalid_body("an organization needs an `end_user`", &["organization"]));
            }
        }
    }
    let config = app.config.current();
    let exists = |key: &str| app.integration(&config, key).is_some();
    for (field, map) in
        [("integrations_config_defaults", &common.integrations_config_defaults), ("overrides", &common.overrides)]
    {
        for (key, value) in map.iter().flat_map(|m| m.iter()) {
            if !exists(key) {
                return Err(unknown_integration(field, Value::String(key.clone())));
            }
            if !value.is_object() {
                return Err(ApiError::invalid_body("must be an object", &[field, key]));
            }
        }
    }
    let tags = common.tags.unwrap_or_default();
    validate_tags(&tags)?;
    let webhook_url_override = match common.webhook_url_override.filter(|u| !u.is_empty()) {
        Some(url) if url::Url::parse(&url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => Some(url),
        Some(_) => return Err(ApiError::invalid_body("must be an http or https URL", &["webhook_url_override"])),
        None => None,
    };
    Ok(ConnectSession {
        end_user,
        integrations_config_defaults: common.integrations_config_defaults,
        overrides: common.overrides,
        webhook_url_override,
        tags,
        ..ConnectSession::default()
    })
}

fn unknown_integration(field: &'static str, at: Value) -> ApiError {
    let message = "Integration does not exist";
    let mut error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("{field}: {message}"));
    let mut issue = Issue::new("custom", message, &[field]);
    issue.path.push(at);
    error = error.with_issue(issue);
    error
}

/// `POST /connect/sessions`.
pub async fn create(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    let mut session = build(
        &app,
        Common {
            end_user: body.end_user,
            organization: body.organization,
            integrations_config_defaults: body.integrations_config_defaults,
            overrides: body.overrides,
            webhook_url_override: body.webhook_url_override,
            tags: body.tags,
        },
    )?;
    if let Some(list) = &body.allowed_integrations {
        let config = app.config.current();
        if let Some(i) = list.iter().position(|key| app.integration(&config, key).is_none()) {
            return Err(unknown_integration("allowed_integrations", Value::from(i)));
        }
    }
    session.allowed_integrations = body.allowed_integrations;
    respond(&app, &session).await
}

/// `POST /connect/sessions/reconnect`: a session bound to an existing connection.
pub async fn create_reconnect(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<ReconnectBody>,
) -> Result<Response, ApiError> {
    let exists = app.store.connections.get(&body.integration_id, &body.connection_id).await?.is_some();
    if !exists {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "ConnectionID or IntegrationId does not exists",
        ));
    }
    let mut session = build(
        &app,
        Common {
            end_user: body.end_user,
            organization: body.organization,
            integrations_config_defaults: body.integrations_config_defaults,
            overrides: body.overrides,
            webhook_url_override: body.webhook_url_override,
            tags: body.tags,
        },
    )?;
    session.allowed_integrations = Some(vec![body.integration_id.clone()]);
    session.reconnect = Some(Reconnect { provider_config_key: body.integration_id, connection_id: body.connection_id });
    respond(&app, &session).await
}

async fn respond(app: &App, session: &ConnectSession) -> Result<Response, ApiError> {
    let (token, expires_at) = insert(&app.store.db, session).await?;
    let mut link = url::Url::parse(&format!("{}/connect/", app.server_url))
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the server URL is not a URL"))?;
    link.query_pairs_mut().append_pair("session_token", &token);
    let data = json!({ "token": token, "connect_link": link.as_str(), "expires_at": iso(expires_at) });
    Ok((StatusCode::CREATED, Json(json!({ "data": data }))).into_response())
}

/// `GET /connect/session`: what the Connect UI needs to render.
pub async fn show(Session(session): Session, State(app): State<Arc<App>>) -> Json<Value> {
    let config = app.config.current();
    let end_user = session.end_user.as_ref().map(|u| {
        json!({
            "id": u.id, "display_name": u.display_name, "email": u.email, "tags": u.tags,
            "organization": u.organization.as_ref().map(|o| json!({ "id": o.id, "display_name": o.display_name })),
        })
    });
    let mut data = json!({
        "endUser": end_user,
        "connectUISettings": crate::api::connect_ui::settings(&config),
        "websocketsPath": "/",
    });
    if let Some(list) = &session.allowed_integrations {
        data["allowed_integrations"] = json!(list);
    }
    if let Some(defaults) = &session.integrations_config_defaults {
        data["integrations_config_defaults"] = Value::Object(defaults.clone());
    }
    if let Some(overrides) = &session.overrides {
        data["overrides"] = Value::Object(overrides.clone());
    }
    if session.reconnect.is_some() {
        data["isReconnecting"] = Value::Bool(true);
    }
    Json(json!({ "data": data }))
}

/// `DELETE /connect/session`.
pub async fn remove(Session(session): Session, State(app): State<Arc<App>>) -> Result<StatusCode, ApiError> {
    delete(&app.store.db, &session.token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /connect/telemetry`: the Connect UI's usage beacons, accepted and dropped.
pub async fn telemetry() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_nangos_shape_and_are_not_stored_as_is() {
        let token = new_token();
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 64);
        assert_ne!(new_token(), token);
        assert_eq!(hash(&token).len(), 64);
        assert!(!hash(&token).contains(&token[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn allowed_integrations_and_reconnect_limit_the_session() {
        let open = ConnectSession::default();
        assert!(open.allows("any"));
        let limited = ConnectSession { allowed_integrations: Some(vec!["a".into()]), ..ConnectSession::default() };
        assert!(limited.allows("a") && !limited.allows("b"));
        let reconnect = ConnectSession {
            reconnect: Some(Reconnect { provider_config_key: "a".into(), connection_id: "c".into() }),
            ..ConnectSession::default()
        };
        assert!(reconnect.allows("a") && !reconnect.allows("b"));
    }
}
