//! Auth: the flows that create connections. Connect sessions ([`sessions`]) authorise a
//! frontend; the credential endpoints (`/api-auth/*`, `/auth/*`) and the OAuth redirect flows
//! then create the connection for the session's end user. [`token`] is the OAuth 2 token
//! endpoint call every grant goes through (authorization code, refresh token, client
//! credentials); [`refresh`] keeps credentials fresh, one refresh per connection across nodes.

pub mod app;
mod credentials;
mod flow;
pub mod jwt;
pub mod oauth1;
mod oauth2;
pub(crate) mod page;
pub mod refresh;
pub mod sessions;
pub mod token;
pub mod two_step;
mod verify;
pub mod ws;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::app::App;
use crate::catalog::AuthMode;
use crate::config::Config;

/// The auth modes whose connections Latchkey's flows create. A catalog may declare others
/// (`BILL`, `TBA`, …): they load, `latchkey check` warns about integrations that use them, and
/// their flows answer with `unsupported_auth_mode`.
pub const SUPPORTED_MODES: &[AuthMode] = &[
    AuthMode::OAuth2,
    AuthMode::OAuth1,
    AuthMode::OAuth2Cc,
    AuthMode::ApiKey,
    AuthMode::Basic,
    AuthMode::TwoStep,
    AuthMode::Jwt,
    AuthMode::App,
    AuthMode::None,
];

pub fn is_supported(mode: AuthMode) -> bool {
    SUPPORTED_MODES.contains(&mode)
}

/// One line per configured integration whose provider uses an auth mode no flow here creates.
pub fn unsupported_warnings(config: &Config) -> Vec<String> {
    config
        .integrations
        .values()
        .filter_map(|integration| {
            let provider = config.catalog.get(&integration.provider)?;
            let mode = provider.auth_mode.unwrap_or(AuthMode::None);
            (!is_supported(mode)).then(|| {
                format!(
                    "integration `{}` uses provider `{}`, whose auth mode {mode} Latchkey cannot create connections for                      yet (supported: {}); import its connections with POST /connections instead",
                    integration.unique_key,
                    provider.name,
                    SUPPORTED_MODES.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

/// What the auth endpoints share beyond the app: the HTTP client for provider calls and the
/// WebSocket clients waiting for a flow's result.
pub struct AuthState {
    pub http: reqwest::Client,
    pub hub: Arc<ws::Hub>,
}

impl AuthState {
    fn new() -> AuthState {
        // Token endpoints and credential checks are the same kind of call: no redirects
        // followed (they would carry credentials elsewhere), bounded in time.
        AuthState { http: token::http_client(), hub: Arc::default() }
    }
}

/// The auth routes, merged into the API router.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(ws::upgrade))
        .route("/connect/sessions", post(sessions::create))
        .route("/connect/sessions/reconnect", post(sessions::create_reconnect))
        .route("/connect/session", get(sessions::show).delete(sessions::remove))
        .route("/connect/telemetry", post(sessions::telemetry))
        .route("/api-auth/api-key/{key}", post(credentials::api_key))
        .route("/api-auth/basic/{key}", post(credentials::basic))
        .route("/auth/unauthenticated/{key}", post(credentials::unauthenticated))
        .route("/auth/two-step/{key}", post(credentials::two_step))
        .route("/auth/jwt/{key}", post(credentials::jwt))
        .route("/auth/{kind}/{key}", post(credentials::unsupported))
        .route("/oauth2/auth/{key}", post(credentials::client_credentials))
        .route("/oauth/connect/{key}", get(oauth2::connect))
        .route("/oauth/callback", get(oauth2::callback))
        .route("/app-auth/connect", get(oauth2::callback))
        .layer(Extension(Arc::new(AuthState::new())))
}
