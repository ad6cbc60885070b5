//! Checking new credentials before they are stored: the provider's `proxy.verification` calls,
//! planned through the proxy's planner so that they carry the credentials exactly as proxied
//! requests will. A 2xx from any endpoint proves the credentials.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::catalog::template::{self, Layers, Scope};
use crate::catalog::{Provider, Verification};
use crate::connection::Connection;
use crate::integration::Integration;
use crate::proxy::plan::{prepare, Outbound};

/// One planned verification call.
struct Call {
    method: reqwest::Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

/// Calls the provider's verification endpoints with `connection`'s credentials; `Ok` when the
/// provider declares none or one of them answers 2xx.
pub async fn verify(
    http: &reqwest::Client,
    provider: &Provider,
    integration: &Integration,
    connection: &Connection,
) -> Result<(), ApiError> {
    let Some(verification) = provider.proxy.as_ref().and_then(|p| p.verification.as_ref()) else { return Ok(()) };
    let calls = plan(provider, integration, connection, verification)?;
    let mut last = String::new();
    for call in calls {
        let mut request = http.request(call.method.clone(), &call.url);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => {
                let status = response.status();
                tracing::info!(provider = %provider.name, %status, "credential verification refused");
                last = format!("the provider answered {status} to {} {}", call.method, path_of(&call.url));
            }
            Err(e) => {
                // Without the URL: its query may carry an API key.
                let e = e.without_url();
                tracing::warn!(provider = %provider.name, "credential verification failed: {e}");
                last = format!("the provider could not be reached ({e})");
            }
        }
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "connection_test_failed",
        format!("The credentials were not accepted by {}: {last}", provider.display_name),
    ))
}

/// The URL path only: queries may carry an API key.
fn path_of(url: &str) -> String {
    url::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_default()
}

/// Plans every endpoint. Endpoints and headers may use the connection's config and
/// credentials (`/projects/${connectionConfig.projectId}`).
fn plan(
    provider: &Provider,
    integration: &Integration,
    connection: &Connection,
    verification: &Verification,
) -> Result<Vec<Call>, ApiError> {
    let config = Value::Object(connection.connection_config.clone());
    let credentials = connection.credentials.to_json();
    let named = json!({ "connectionConfig": config, "connection_config": config, "credentials": credentials });
    let layers = Layers(vec![&named, &credentials]);
    let scope = Scope::new(&layers);
    let render = |text: &str| {
        template::render_with_fallback(text, &scope).complete().map_err(|missing| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_connection_config",
                format!("checking the credentials needs {}, which were not given", missing.join(", ")),
            )
        })
    };
    // A verification base URL replaces the provider's for these calls only.
    let overridden;
    let provider = match &verification.base_url_override {
        Some(base) => {
            let mut copy = provider.clone();
            copy.proxy.get_or_insert_default().base_url = Some(render(base)?);
            overridden = copy;
            &overridden
        }
        None => provider,
    };
    let method = reqwest::Method::from_bytes(verification.method.to_ascii_uppercase().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut calls = Vec::new();
    for endpoint in &verification.endpoints {
        let endpoint = render(endpoint)?;
        let (path, query) = match endpoint.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (endpoint, None),
        };
        let outbound =
            Outbound { method: method.as_str(), endpoint: &path, query: query.as_deref(), base_url_override: None };
        let (target, mut headers) = prepare(&outbound, provider, integration, connection)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "connection_test_failed", e.message))?;
        for (name, value) in &verification.headers {
            let name = name.to_ascii_lowercase();
            headers.retain(|(n, _)| *n != name);
            headers.push((name, render(value)?));
        }
        let scheme = if target.tls { "https" } else { "http" };
        calls.push(Call {
            method: method.clone(),
            url: format!("{scheme}://{}{}", target.authority(), target.path_and_query),
            headers,
            body: verification.data.clone(),
        });
    }
    Ok(calls)
}
