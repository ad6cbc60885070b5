//! The control plane: Nango's REST API (providers, integrations, connections), the admin
//! endpoints, and health. It runs behind the same listener as the proxy; the edge hands every
//! request that is not `/proxy/*` to this router.

mod admin;
pub mod connect_ui;
pub(crate) mod connections;
pub mod error;
pub mod extract;
mod integrations;
mod providers;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, Method};
use axum::routing::{get, post};
use axum::{Json, Router, ServiceExt};
use serde_json::json;
use tower::Layer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use crate::app::App;

pub use error::ApiError;

/// The router, with CORS and Nango's trailing-slash leniency (`/records/` is `/records`).
pub fn service(app: Arc<App>) -> axum::routing::IntoMakeService<NormalizePath<Router>> {
    let router = routes().layer(cors()).with_state(app);
    ServiceExt::<Request>::into_make_service(NormalizePathLayer::trim_trailing_slash().layer(router))
}

fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "result": "ok" })) }))
        .route("/providers", get(providers::list))
        .route("/providers.json", get(providers::raw_catalog))
        .route("/providers/{provider}", get(providers::show))
        .route("/integrations", get(integrations::list).post(integrations::create))
        .route("/integrations/{key}", get(integrations::show).patch(integrations::update).delete(integrations::delete))
        .route("/connections", get(connections::list).post(connections::import))
        .route("/connections/metadata", post(connections::set_metadata).patch(connections::update_metadata))
        .route("/connections/{id}", get(connections::show).patch(connections::patch).delete(connections::delete))
        // The singular paths older SDKs send.
        .route("/connection", get(connections::list).post(connections::import))
        .route("/connection/metadata", post(connections::set_metadata).patch(connections::update_metadata))
        .route("/connection/{id}", get(connections::show).delete(connections::delete))
        .route("/logs", get(crate::logs::api::list))
        .route("/webhooks/deliveries", get(crate::webhooks::api::list))
        .route("/webhooks/deliveries/{id}", get(crate::webhooks::api::show))
        .route("/webhooks/deliveries/{id}/replay", post(crate::webhooks::api::replay))
        .route("/admin/config", get(admin::config))
        .route("/admin/reload", post(admin::reload))
        .merge(crate::records::api::routes())
        .merge(crate::functions::api::routes())
        .merge(crate::scheduler::api::routes())
        .merge(crate::auth::routes())
        .merge(connect_ui::routes())
        .fallback(|| async { ApiError::not_found("No such endpoint") })
}

fn cors() -> CorsLayer {
    let allowed = [
        "authorization",
        "content-type",
        "accept",
        "origin",
        "x-requested-with",
        "nango-activity-log-id",
        "nango-is-dry-run",
        "nango-is-sync",
        "nango-is-script",
        "provider-config-key",
        "connection-id",
        "sentry-trace",
        "baggage",
    ];
    let exposed = [
        "authorization",
        "etag",
        "content-type",
        "content-length",
        "x-nango-signature",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ];
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers(allowed.map(HeaderName::from_static))
        .expose_headers(exposed.map(HeaderName::from_static))
        .max_age(Duration::from_secs(600))
}
