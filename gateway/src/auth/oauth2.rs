//! The redirect flows. OAuth 2 authorization code: `GET /oauth/connect/:key` sends the popup to
//! the provider with a random single-use `state` (and a PKCE challenge unless the provider turns
//! PKCE off); `GET /oauth/callback` takes the state back, exchanges the code at the token
//! endpoint ([`super::token`]), stores the connection and tells the frontend (WebSocket and
//! popup page). OAuth 1.0a runs through the same two endpoints, its legs in [`super::oauth1`];
//! so does the GitHub App install ([`super::app`]).
//!
//! The code, the verifier and the tokens are never logged; a provider's `error` and
//! `error_description` reach the user as the provider wrote them.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine as _;
use chrono::Duration;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::flow::{begin, Flow, FlowQuery};
use super::sessions::ConnectSession;
use super::token::{self, Client, Grant};
use super::ws::Outcome;
use super::{page, AuthState};
use crate::api::extract::parse_query;
use crate::app::App;
use crate::catalog::template::{self, hex, Layers, Scope};
use crate::catalog::{AuthMode, Provider};
use crate::connection::Credentials;
use crate::integration::Integration;
use crate::store::{Db, KeyRing, Sealed, StoreError};
use crate::time::now_millis;
use crate::with_pool;

/// How long the user has between the redirect and the callback.
const FLOW_LIFETIME: Duration = Duration::minutes(30);

/// A flow between redirect and callback, stored sealed under a hash of its state.
#[derive(Serialize, Deserialize)]
struct Pending {
    provider_config_key: String,
    connection_id: String,
    code_verifier: Option<String>,
    redirect_uri: String,
    connection_config: Map<String, Value>,
    session: ConnectSession,
    ws_client_id: Option<String>,
    client_override: Option<ClientOverride>,
    /// OAuth 1: the request token and its secret, until the access-token step.
    #[serde(default)]
    oauth1_request: Option<(String, String)>,
}

impl Pending {
    /// The flow's part of a pending flow; what only some modes need is left empty.
    fn new(flow: &Flow, query: &FlowQuery, redirect_uri: String) -> Pending {
        Pending {
            provider_config_key: flow.integration.unique_key.clone(),
            connection_id: flow.connection_id.clone(),
            code_verifier: None,
            redirect_uri,
            connection_config: flow.connection_config.clone(),
            session: flow.session.clone(),
            ws_client_id: query.ws_client_id.clone(),
            client_override: None,
            oauth1_request: None,
        }
    }
}

/// The end user's own OAuth client, kept in the credentials as `config_override`.
#[derive(Serialize, Deserialize)]
struct ClientOverride {
    client_id: String,
    client_secret: String,
}

fn state_hash(state: &str) -> String {
    hex(&Sha256::digest(state.as_bytes()))
}

async fn store_pending(db: &Db, keys: &KeyRing, state: &str, pending: &Pending) -> Result<(), StoreError> {
    let sealed = keys.seal(&serde_json::to_vec(pending)?);
    let now = now_millis();
    with_pool!(db, pool => {
        sqlx::query("DELETE FROM oauth_flows WHERE expires_at < $1").bind(now).execute(pool).await?;
        sqlx::query(
            "INSERT INTO oauth_flows (state_hash, sealed, nonce, key_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(state_hash(state))
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .bind(&sealed.key_id)
        .bind(now)
        .bind(now + FLOW_LIFETIME.num_milliseconds())
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Removes and returns the flow of `state`: a state works once, and only before it expires.
async fn take_pending(db: &Db, keys: &KeyRing, state: &str) -> Result<Option<Pending>, StoreError> {
    let row: Option<(Vec<u8>, Vec<u8>, String, i64)> = with_pool!(db, pool => {
        sqlx::query_as("DELETE FROM oauth_flows WHERE state_hash = $1 RETURNING sealed, nonce, key_id, expires_at")
            .bind(state_hash(state))
            .fetch_optional(pool)
            .await?
    });
    let Some((ciphertext, nonce, key_id, expires_at)) = row else { return Ok(None) };
    if expires_at < now_millis() {
        return Ok(None);
    }
    let plain = keys.open(&Sealed { ciphertext, nonce, key_id })?;
    Ok(Some(serde_json::from_slice(&plain)?))
}

/// A random URL-safe secret of 256 bits.
fn random_secret() -> String {
    hex(&rand::random::<[u8; 32]>())
}

fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Tells the frontend's WebSocket, when there is one, that the flow failed.
async fn tell_error(
    app: &App,
    auth: &AuthState,
    ws_client_id: Option<&str>,
    key: &str,
    error_type: &str,
    message: &str,
) {
    if let Some(id) = ws_client_id {
        let outcome = Outcome::Error { provider_config_key: key, connection_id: "", error_type, description: message };
        auth.hub.notify(&app.store.db, id, outcome).await;
    }
}

/// A flow that failed before the redirect: the popup shows why, the frontend hears it too.
async fn fail(
    app: &App,
    auth: &AuthState,
    ws_client_id: Option<&str>,
    key: &str,
    error_type: &str,
    message: &str,
) -> Response {
    tell_error(app, auth, ws_client_id, key, error_type, message).await;
    page::error(error_type, message)
}

/// `GET /oauth/connect/:providerConfigKey`.
pub async fn connect(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    Path(key): Path<String>,
    query: FlowQuery,
) -> Response {
    let ws = query.ws_client_id.as_deref();
    let flow = match begin(&app, &key, &query, &[AuthMode::OAuth2, AuthMode::OAuth1, AuthMode::App]).await {
        Ok(flow) => flow,
        // Authentication and session errors answer in JSON, as Nango's do.
        Err(e) => {
            tell_error(&app, &auth, ws, &key, e.code, &e.message).await;
            return e.into_response();
        }
    };
    if let Err(e) = flow.check_connection_config() {
        return fail(&app, &auth, ws, &key, e.code, &e.message).await;
    }
    if flow.provider.auth_mode == Some(AuthMode::App) {
        // No OAuth client: the user installs the app, whose own key mints the tokens.
        let state = random_secret();
        return match super::app::install_url(&flow, &state) {
            Ok(url) => {
                let pending = Pending::new(&flow, &query, format!("{}/app-auth/connect", app.server_url));
                redirect(&app, &auth, &flow, &state, &pending, url).await
            }
            Err(message) => fail(&app, &auth, ws, &key, "provider_config_err", &message).await,
        };
    }
    let client_override = match (
        query.credentials.get("oauth_client_id_override").and_then(Value::as_str),
        query.credentials.get("oauth_client_secret_override").and_then(Value::as_str),
    ) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            Some(ClientOverride { client_id: id.to_string(), client_secret: secret.to_string() })
        }
        _ => None,
    };
    let client_id = match (&client_override, &flow.integration.credentials.client_id) {
        (Some(o), _) => o.client_id.clone(),
        (None, Some(id)) if flow.integration.credentials.client_secret.is_some() => id.clone(),
        _ => {
            let message = format!(
                "Integration `{key}` has no OAuth client: set client_id and client_secret in nango.yaml or through the API"
            );
            return fail(&app, &auth, ws, &key, "provider_config_err", &message).await;
        }
    };
    let state = random_secret();
    let redirect_uri = format!("{}/oauth/callback", app.server_url);
    let mut code_verifier = None;
    let mut oauth1_request = None;
    let url = if flow.provider.auth_mode == Some(AuthMode::OAuth1) {
        let secret = match (&client_override, &flow.integration.credentials.client_secret) {
            (Some(o), _) => o.client_secret.clone(),
            (None, Some(secret)) => secret.expose().to_string(),
            (None, None) => String::new(),
        };
        let callback = format!("{redirect_uri}?state={state}");
        let scopes = &flow.integration.credentials.scopes;
        let private_key = flow.integration.credentials.private_key.as_ref().map(|k| k.expose());
        let consumer = (client_id.as_str(), secret.as_str(), private_key);
        match super::oauth1::start(&auth.http, &flow.provider, consumer, &callback, scopes).await {
            Ok((url, pair)) => {
                oauth1_request = Some((pair.token, pair.secret));
                url
            }
            Err(e) => return fail(&app, &auth, ws, &key, "request_token_err", &e.to_string()).await,
        }
    } else {
        code_verifier = (!flow.provider.disable_pkce).then(random_secret);
        match authorization_url(&flow, &query, &client_id, &redirect_uri, &state, code_verifier.as_deref()) {
            Ok(url) => url,
            Err(message) => return fail(&app, &auth, ws, &key, "provider_config_err", &message).await,
        }
    };
    let pending =
        Pending { code_verifier, client_override, oauth1_request, ..Pending::new(&flow, &query, redirect_uri) };
    redirect(&app, &auth, &flow, &state, &pending, url).await
}

/// Remembers the flow under its state and sends the popup to the provider.
async fn redirect(app: &App, auth: &AuthState, flow: &Flow, state: &str, pending: &Pending, url: String) -> Response {
    let key = &pending.provider_config_key;
    if let Err(e) = store_pending(&app.store.db, &app.store.keys, state, pending).await {
        tracing::error!("cannot store an OAuth flow: {e}");
        let ws = pending.ws_client_id.as_deref();
        return fail(app, auth, ws, key, "server_error", "The gateway could not store the authorization request").await;
    }
    tracing::info!(provider_config_key = %key, provider = %flow.provider.name, "authorization started");
    (StatusCode::FOUND, [(header::LOCATION, url), (header::CACHE_CONTROL, "no-store".to_string())]).into_response()
}

/// The provider's authorization URL with the request's parameters.
fn authorization_url(
    flow: &Flow,
    query: &FlowQuery,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    code_verifier: Option<&str>,
) -> Result<String, String> {
    let provider = &flow.provider;
    let config = Value::Object(flow.connection_config.clone());
    let named = json!({ "connectionConfig": config, "connection_config": config });
    let layers = Layers(vec![&named]);
    let scope = Scope::new(&layers);
    let render = |text: &str, what: &str| {
        template::render_with_fallback(text, &scope).complete().map_err(|missing| {
            let names: Vec<String> =
                missing.iter().map(|m| m.strip_prefix("connectionConfig.").unwrap_or(m).to_string()).collect();
            format!("The {what} of provider `{}` needs connection config {}", provider.name, names.join(", "))
        })
    };
    let template_url = provider
        .authorization_url
        .as_deref()
        .ok_or_else(|| format!("Provider `{}` has no authorization_url", provider.name))?;
    let mut url = url::Url::parse(&render(template_url, "authorization URL")?)
        .map_err(|e| format!("The authorization URL of provider `{}` is not a URL: {e}", provider.name))?;

    let defaults = flow.session.defaults(&flow.integration.unique_key);
    let scopes = match defaults
        .and_then(|d| d.get("connection_config"))
        .and_then(|c| c.get("oauth_scopes_override"))
        .and_then(Value::as_str)
    {
        Some(list) => crate::config::split_scopes(list),
        None => flow.integration.credentials.scopes.clone(),
    };
    let separator = provider.scope_separator.as_deref().unwrap_or(" ");

    let mut params: IndexMap<String, String> = IndexMap::new();
    params.insert("response_type".into(), "code".into());
    params.insert("client_id".into(), client_id.into());
    params.insert("redirect_uri".into(), redirect_uri.into());
    if !scopes.is_empty() {
        params.insert("scope".into(), scopes.join(separator));
    }
    params.insert("state".into(), state.into());
    if let Some(verifier) = code_verifier {
        params.insert("code_challenge".into(), pkce_challenge(verifier));
        params.insert("code_challenge_method".into(), "S256".into());
    }
    for (name, value) in &provider.authorization_params {
        let text = match value {
            Value::String(s) => render(s, "authorization parameters")?,
            other => other.to_string(),
        };
        params.insert(name.clone(), text);
    }
    let session_params = defaults.and_then(|d| d.get("authorization_params")).and_then(Value::as_object);
    for (name, value) in query.authorization_params.iter().chain(session_params.into_iter().flatten()) {
        match value.as_str() {
            Some("undefined") => {
                params.shift_remove(name);
            }
            Some(text) => {
                params.insert(name.clone(), text.to_string());
            }
            None => {
                params.insert(name.clone(), value.to_string());
            }
        }
    }
    let user_scope =
        defaults.and_then(|d| d.get("user_scopes")).and_then(Value::as_str).or(query.user_scope.as_deref());
    if let Some(user_scope) = user_scope.filter(|s| !s.is_empty()) {
        params.insert("user_scope".into(), user_scope.to_string());
    }
    if provider.entry.get("authorization_url_skip_empty").and_then(Value::as_bool) == Some(true) {
        params.retain(|_, v| !v.is_empty());
    }
    url.query_pairs_mut().extend_pairs(params.iter());
    let mut text = url.to_string();
    // Providers that spell a standard parameter differently (`client_key`, `redirect_url`).
    if let Some(replacements) = provider.entry.get("authorization_url_replacements").and_then(Value::as_object) {
        for (from, to) in replacements {
            if let Some(to) = to.as_str() {
                text = text.replacen(from.as_str(), to, 1);
            }
        }
    }
    Ok(text)
}

/// `GET /oauth/callback`, and `GET /app-auth/connect` where GitHub returns from an app install.
pub async fn callback(
    State(app): State<Arc<App>>,
    Extension(auth): Extension<Arc<AuthState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = parse_query(raw.as_deref().unwrap_or_default());
    let text = |name: &str| query.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let Some(state) = text("state") else {
        if text("installation_id").is_some() && text("setup_action").is_some() {
            return installation_changed(&headers);
        }
        return page::error("invalid_state", "The provider's answer has no state; start the connection again");
    };
    let pending = match take_pending(&app.store.db, &app.store.keys, state).await {
        Ok(Some(pending)) => pending,
        Ok(None) => {
            return page::error(
                "invalid_state",
                "This authorization is unknown, was already used, or has expired; start the connection again",
            )
        }
        Err(e) => {
            tracing::error!("cannot read an OAuth flow: {e}");
            return page::error("server_error", "The gateway could not read the authorization request");
        }
    };
    let key = pending.provider_config_key.clone();
    let result = match text("error") {
        Some(error) => {
            tracing::info!(provider_config_key = %key, error, "the provider refused the authorization");
            let message = match text("error_description") {
                Some(description) => format!("{error}: {description}"),
                None => error.to_string(),
            };
            Err(("callback_err", message))
        }
        None => exchange(&app, &auth, &pending, &query).await,
    };
    let outcome = match &result {
        Ok(()) => Outcome::Success { provider_config_key: &key, connection_id: &pending.connection_id },
        Err((error_type, message)) => Outcome::Error {
            provider_config_key: &key,
            connection_id: &pending.connection_id,
            error_type,
            description: message,
        },
    };
    if let Some(id) = &pending.ws_client_id {
        auth.hub.notify(&app.store.db, id, outcome).await;
    }
    match result {
        Ok(()) => page::success(),
        Err((error_type, message)) => page::error(error_type, &message),
    }
}

/// GitHub's return after someone changed an installation on GitHub itself, outside any flow:
/// back to where they came from, as Nango does; nothing changes here.
fn installation_changed(headers: &HeaderMap) -> Response {
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    match back {
        Some(url) => (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response(),
        None => page::success(),
    }
}

/// Exchanges the code and stores the connection.
async fn exchange(
    app: &App,
    auth: &AuthState,
    pending: &Pending,
    query: &Map<String, Value>,
) -> Result<(), (&'static str, String)> {
    let key = &pending.provider_config_key;
    let config = app.config.current();
    let integration = app
        .integration(&config, key)
        .ok_or_else(|| ("unknown_provider_config", format!("Integration `{key}` no longer exists")))?;
    let provider: Arc<Provider> = config.catalog.get(&integration.provider).cloned().ok_or_else(|| {
        ("unknown_provider_template", format!("Provider `{}` is no longer in the catalog", integration.provider))
    })?;
    if let Some((request_token, request_secret)) = &pending.oauth1_request {
        let credentials =
            oauth1_access(auth, &provider, &integration, pending, query, request_token, request_secret).await?;
        let config = pending.connection_config.clone();
        return store(app, pending, integration, provider, credentials, config).await;
    }
    if provider.auth_mode == Some(AuthMode::App) {
        let installation_id = super::app::installation_id(query)?;
        let (credentials, config) =
            super::app::credentials(app, &provider, &integration, &pending.connection_config, installation_id).await?;
        return store(app, pending, integration, provider, credentials, config).await;
    }
    let code_param =
        provider.entry.get("authorization_code_param_in_callback").and_then(Value::as_str).unwrap_or("code");
    let code = query
        .get(code_param)
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ("callback_err", format!("The provider's answer has no `{code_param}`")))?;
    let client = pending.client_override.as_ref().map(|o| Client { id: &o.client_id, secret: &o.client_secret });
    let grant = Grant::AuthorizationCode {
        code,
        redirect_uri: &pending.redirect_uri,
        code_verifier: pending.code_verifier.as_deref(),
    };
    let tokens = token::request(&auth.http, &provider, &integration, &pending.connection_config, client, grant)
        .await
        .map_err(|e| {
        tracing::info!(provider_config_key = %key, kind = e.kind(), "the code exchange failed: {e}");
        (e.kind(), e.to_string())
    })?;
    let mut connection_config = pending.connection_config.clone();
    connection_config.extend(tokens.metadata.clone());
    for name in &provider.redirect_uri_metadata {
        if let Some(value) = query.get(name) {
            connection_config.insert(name.clone(), value.clone());
        }
    }
    let config_override =
        pending.client_override.as_ref().map(|o| json!({ "client_id": o.client_id, "client_secret": o.client_secret }));
    store(app, pending, integration, provider, tokens.into_credentials(config_override), connection_config).await
}

/// Stores the connection a flow ends with, for the session that started it.
async fn store(
    app: &App,
    pending: &Pending,
    integration: Arc<Integration>,
    provider: Arc<Provider>,
    credentials: Credentials,
    connection_config: Map<String, Value>,
) -> Result<(), (&'static str, String)> {
    let flow = Flow {
        session: pending.session.clone(),
        integration,
        provider,
        connection_id: pending.connection_id.clone(),
        connection_config: Map::new(),
    };
    flow.finish(app, credentials, connection_config).await.map_err(|e| ("server_error", e.message))?;
    Ok(())
}

/// OAuth 1's last step: the access token for the request token the user approved.
async fn oauth1_access(
    auth: &AuthState,
    provider: &Provider,
    integration: &Integration,
    pending: &Pending,
    query: &Map<String, Value>,
    request_token: &str,
    request_secret: &str,
) -> Result<Credentials, (&'static str, String)> {
    let text = |name: &str| query.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    if text("oauth_token") != Some(request_token) {
        return Err(("callback_err", "The provider's answer is for another request token".to_string()));
    }
    let verifier = text("oauth_verifier")
        .ok_or_else(|| ("callback_err", "The provider's answer has no oauth_verifier".to_string()))?;
    let (id, secret) = match &pending.client_override {
        Some(o) => (o.client_id.clone(), o.client_secret.clone()),
        None => (
            integration.credentials.client_id.clone().unwrap_or_default(),
            integration.credentials.client_secret.as_ref().map(|s| s.expose().to_string()).unwrap_or_default(),
        ),
    };
    let private_key = integration.credentials.private_key.as_ref().map(|k| k.expose());
    let consumer = (id.as_str(), secret.as_str(), private_key);
    let pair = super::oauth1::finish(&auth.http, provider, consumer, (request_token, request_secret), verifier)
        .await
        .map_err(|e| ("access_token_err", e.to_string()))?;
    Ok(Credentials::OAuth1 { oauth_token: pair.token, oauth_token_secret: pair.secret, raw: Value::Object(pair.raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_rfc7636_s256() {
        // Computed independently (Python's hashlib and base64.urlsafe_b64encode, unpadded).
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOXjXk"),
            "asL98JcfT_fCoWCt-ei9GB8fq1xsYXNFxGWPtQWnmNo"
        );
        assert_eq!(random_secret().len(), 64);
    }
}
