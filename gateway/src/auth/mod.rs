//! Auth: the flows that create connections. Connect sessions ([`sessions`]) authorise a
//! frontend; the credential endpoints (`/api-auth/*`, `/auth/*`) and the OAuth redirect flows
//! then create the connection for the session's end user. [`token`] is the OAuth 2 token
//! endpoint call every grant goes through (authorization code, refresh token, client
//! credentials).

mod credentials;
mod flow;
pub mod sessions;
pub mod token;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::app::App;

/// What the auth endpoints share beyond the app: the HTTP client for provider calls.
pub struct AuthState {
    pub http: reqwest::Client,
}

impl AuthState {
    fn new() -> AuthState {
        let http = reqwest::Client::builder()
            .user_agent(concat!("Latchkey/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Redirects could lead a credential-carrying request to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        AuthState { http }
    }
}

/// The auth routes, merged into the API router.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/connect/sessions", post(sessions::create))
        .route("/connect/sessions/reconnect", post(sessions::create_reconnect))
        .route("/connect/session", get(sessions::show).delete(sessions::remove))
        .route("/connect/telemetry", post(sessions::telemetry))
        .route("/api-auth/api-key/{key}", post(credentials::api_key))
        .route("/api-auth/basic/{key}", post(credentials::basic))
        .route("/auth/unauthenticated/{key}", post(credentials::unauthenticated))
        .layer(Extension(Arc::new(AuthState::new())))
}
