//! What every connection-creating endpoint does first and last: authenticate the frontend (a
//! connect session token in the query), resolve the integration, the connection id and the
//! connection config; and finally store the connection with the session's end user and tags.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::sessions::{self, ConnectSession};
use crate::api::connections::validate_connection_id;
use crate::api::error::{ApiError, Issue};
use crate::api::extract::parse_query;
use crate::app::App;
use crate::catalog::{AuthMode, Provider};
use crate::connection::{Connection, Credentials};
use crate::integration::Integration;
use crate::store::connections::{NewConnection, Upserted};

/// The query the frontend SDK sends to the auth endpoints. Parameters an endpoint has no use
/// for (`hmac`, `user_scope` on a credential flow) are ignored, as the SDK sends them freely.
#[derive(Debug, Default, Deserialize)]
pub struct FlowQuery {
    pub connect_session_token: Option<String>,
    pub public_key: Option<String>,
    pub connection_id: Option<String>,
    #[serde(default)]
    pub params: Map<String, Value>,
    /// OAuth only: the WebSocket client to tell the result.
    pub ws_client_id: Option<String>,
    /// OAuth only: Slack-style user scopes.
    pub user_scope: Option<String>,
    /// OAuth only: extra authorization URL parameters (`undefined` removes one).
    #[serde(default)]
    pub authorization_params: Map<String, Value>,
    /// OAuth only: the end user's own OAuth client (`oauth_client_id_override`, …).
    #[serde(default)]
    pub credentials: Map<String, Value>,
}

impl<S: Send + Sync> FromRequestParts<S> for FlowQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let map = parse_query(parts.uri.query().unwrap_or_default());
        serde_json::from_value(Value::Object(map)).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_query_params", format!("the query is not valid: {e}"))
        })
    }
}

/// A flow that may proceed: who asked, for which integration and connection.
pub struct Flow {
    pub session: ConnectSession,
    pub integration: Arc<Integration>,
    pub provider: Arc<Provider>,
    pub connection_id: String,
    pub connection_config: Map<String, Value>,
}

/// Authenticates the request and resolves what the flow works on. `expected` is the auth mode
/// the endpoint serves (Nango's `invalid_auth_mode` otherwise).
pub async fn begin(app: &App, key: &str, query: &FlowQuery, expected: &[AuthMode]) -> Result<Flow, ApiError> {
    let session = match (&query.connect_session_token, &query.public_key) {
        (Some(token), _) => sessions::authenticate(app, token).await?,
        (None, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "deprecated_authentication",
                "Public keys are not supported by Latchkey; create a connect session (POST /connect/sessions) and \
                 pass its token as connectSessionToken",
            ))
        }
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_connect_session_token",
                "Authentication is required: pass the connect session token (connect_session_token=…)",
            ))
        }
    };
    let config = app.config.current();
    let integration = app.integration(&config, key).ok_or_else(|| ApiError::unknown_integration(key))?;
    if !session.allows(key) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "integration_not_allowed",
            format!("This connect session does not allow integration `{key}`"),
        ));
    }
    let provider = config.catalog.get(&integration.provider).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_provider_template",
            format!("Integration `{key}` uses provider `{}`, which is not in the catalog", integration.provider),
        )
    })?;
    let mode = provider.auth_mode.unwrap_or(AuthMode::None);
    if !super::is_supported(mode) {
        return Err(unsupported(&provider.name, mode));
    }
    if !expected.contains(&mode) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_auth_mode",
            format!("Provider `{}` uses {mode}; this endpoint does not create {mode} connections", provider.name),
        ));
    }
    if query.connection_id.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query_params",
            "connection_id is forbidden when using session token",
        )
        .with_issue(Issue::new(
            "custom",
            "connection_id is forbidden when using session token",
            &["connection_id"],
        )));
    }
    let connection_id = match &session.reconnect {
        Some(bound) => bound.connection_id.clone(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    validate_connection_id(&connection_id)?;
    let connection_config = connection_config(&query.params, session.defaults(key));
    Ok(Flow { session, integration, provider, connection_id, connection_config })
}

/// A flow for an auth mode Latchkey does not run.
pub fn unsupported(provider: &str, mode: AuthMode) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "unsupported_auth_mode",
        format!(
            "Provider `{provider}` uses {mode}, which Latchkey cannot create connections for yet; import the \
             connection's credentials with POST /connections instead"
        ),
    )
}

/// `params[…]` from the frontend (strings only; it may not choose where webhooks go), then the
/// session's defaults, which the backend set and therefore win.
fn connection_config(params: &Map<String, Value>, defaults: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut config: Map<String, Value> = params
        .iter()
        .filter(|(k, v)| v.is_string() && !k.starts_with("webhook_url"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(Value::Object(from_session)) = defaults.and_then(|d| d.get("connection_config")) {
        config.extend(from_session.clone());
    }
    config
}

impl Flow {
    /// Checks the connection config against the provider's schema: required fields present and
    /// values matching their patterns.
    pub fn check_connection_config(&self) -> Result<(), ApiError> {
        let automated: Vec<&str> = self.provider.automated_config_keys().collect();
        for (name, field) in &self.provider.connection_config {
            if field.automated || automated.contains(&name.as_str()) {
                continue;
            }
            match self.connection_config.get(name).and_then(Value::as_str) {
                None | Some("") if !field.optional && field.default_value.is_none() => {
                    let title = field.title.as_deref().unwrap_or(name);
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_connection_config",
                        format!("{title} is required (connection config `{name}`)"),
                    )
                    .with_issue(Issue::new("invalid_value", "required", &["params", name])));
                }
                Some(value) if !value.is_empty() && !field.accepts(value) => {
                    let title = field.title.as_deref().unwrap_or(name);
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_connection_config",
                        format!("{title} does not have the expected form (connection config `{name}`)"),
                    )
                    .with_issue(Issue::new(
                        "invalid_value",
                        "does not match the pattern",
                        &["params", name],
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A connection with these credentials as it would be stored (for verification calls).
    pub fn draft(&self, credentials: Credentials) -> Connection {
        let now = chrono::Utc::now();
        Connection {
            id: 0,
            connection_id: self.connection_id.clone(),
            provider_config_key: self.integration.unique_key.clone(),
            provider: self.integration.provider.clone(),
            credentials,
            connection_config: self.connection_config.clone(),
            metadata: None,
            tags: BTreeMap::new(),
            end_user: self.session.end_user.clone(),
            webhook_url_override: None,
            created_at: now,
            updated_at: now,
            last_fetched_at: None,
        }
    }

    /// Stores the connection for the session's end user.
    pub async fn finish(
        &self,
        app: &App,
        credentials: Credentials,
        connection_config: Map<String, Value>,
    ) -> Result<(Arc<Connection>, Upserted), ApiError> {
        let mut config = connection_config;
        if self.session.reconnect.is_some() {
            // Reconnecting keeps what the connection knew and replaces its credentials.
            if let Some(existing) =
                app.store.connections.read(&self.integration.unique_key, &self.connection_id).await?
            {
                let mut merged = existing.connection_config;
                merged.extend(config);
                config = merged;
            }
        }
        let new = NewConnection {
            provider_config_key: self.integration.unique_key.clone(),
            connection_id: self.connection_id.clone(),
            provider: self.integration.provider.clone(),
            credentials,
            connection_config: config,
            metadata: None,
            tags: self.session.connection_tags(),
            end_user: self.session.end_user.clone(),
            webhook_url_override: self.session.webhook_url_override.clone(),
        };
        let (connection, upserted) = app.store.connections.upsert(&new).await?;
        app.webhooks.connection_saved(&connection, upserted).await;
        tracing::info!(
            provider_config_key = %connection.provider_config_key,
            connection_id = %connection.connection_id,
            auth_mode = connection.credentials.mode(),
            operation = ?upserted,
            "connection stored"
        );
        Ok((connection, upserted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn session_defaults_win_over_frontend_params() {
        let params = json!({"subdomain": "evil", "region": "eu", "webhook_url": "x", "n": 1});
        let defaults = json!({"connection_config": {"subdomain": "acme"}});
        let config = connection_config(params.as_object().unwrap(), defaults.as_object());
        assert_eq!(Value::Object(config), json!({"subdomain": "acme", "region": "eu"}));
    }
}
