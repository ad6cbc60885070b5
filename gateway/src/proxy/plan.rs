//! Planning an outbound call through a connection: which upstream, which path, which headers.
//! The edge plans every `/proxy` request this way, and anything else that calls a provider on a
//! connection's behalf (functions, credential checks) plans its calls the same way.

use std::sync::Arc;

use http::StatusCode;

use super::inject;
use super::target::{self, Target};
use crate::app::App;
use crate::auth::oauth1;
use crate::catalog::template::Scope;
use crate::catalog::Provider;
use crate::connection::{Connection, Credentials};
use crate::integration::Integration;

/// What the caller asked for.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    pub method: &'a str,
    /// The path below the provider's base URL, percent-encoded as received.
    pub endpoint: &'a str,
    pub query: Option<&'a str>,
    pub base_url_override: Option<&'a str>,
}

/// A planned upstream request.
pub struct Plan {
    pub integration: Arc<Integration>,
    pub provider: Arc<Provider>,
    pub connection: Arc<Connection>,
    pub target: Target,
    /// Headers to set upstream (lower-case names): the injected credentials and the provider's
    /// templates.
    pub headers: Vec<(String, String)>,
}

/// Why a call cannot be planned, as an HTTP answer in Nango's envelope.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl PlanError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> PlanError {
        PlanError { status, code, message: message.into() }
    }
}

/// Looks up the integration, its provider and the connection, and plans the call.
pub async fn plan(app: &App, key: &str, connection_id: &str, outbound: &Outbound<'_>) -> Result<Plan, PlanError> {
    let config = app.config.current();
    let integration = app.integration(&config, key).ok_or_else(|| {
        PlanError::new(StatusCode::NOT_FOUND, "unknown_provider_config", format!("There is no integration `{key}`"))
    })?;
    let provider = config.catalog.get(&integration.provider).cloned().ok_or_else(|| {
        PlanError::new(
            StatusCode::BAD_REQUEST,
            "unknown_provider",
            format!("integration `{key}` uses provider `{}`, which is not in the catalog", integration.provider),
        )
    })?;
    let connection = app
        .store
        .connections
        .get(key, connection_id)
        .await
        .map_err(|e| {
            tracing::error!("cannot read connection {connection_id}: {e}");
            PlanError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "Failed to get connection")
        })?
        .ok_or_else(|| {
            PlanError::new(
                StatusCode::BAD_REQUEST,
                "unknown_connection",
                format!("There is no connection `{connection_id}` for integration `{key}`"),
            )
        })?;
    let connection = app.refresh.fresh(&integration, &provider, connection).await?;
    let (target, headers) = prepare(outbound, &provider, &integration, &connection)?;
    Ok(Plan { integration, provider, connection, target, headers })
}

/// The upstream target and headers of a request. Synchronous: the template variables borrow the
/// connection and are not `Send`.
pub fn prepare(
    outbound: &Outbound<'_>,
    provider: &Provider,
    integration: &Integration,
    connection: &Connection,
) -> Result<(Target, Vec<(String, String)>), PlanError> {
    let method = outbound.method;
    let vars = inject::ProxyVars::new(connection, integration, method);
    let scope = Scope::new(&vars);
    let refuse =
        |e: inject::InjectError| PlanError::new(StatusCode::BAD_REQUEST, "proxy_request_failed", e.to_string());
    let provider_base = inject::base_url(provider, &vars, &scope);
    let base = match outbound.base_url_override {
        Some(url) => {
            check_override(url, provider_base.as_deref().ok(), integration)?;
            url.to_string()
        }
        None => provider_base.map_err(refuse)?,
    };
    let headers = inject::headers(provider, &vars, &scope).map_err(refuse)?;
    let query = inject::query(provider, &scope);
    let target = target::build(&base, outbound.endpoint, outbound.query, &query)
        .map_err(|e| PlanError::new(StatusCode::BAD_REQUEST, "invalid_proxy_path", e.to_string()))?;
    let mut headers = headers;
    if let Credentials::OAuth1 { oauth_token, oauth_token_secret, .. } = &connection.credentials {
        // A template may supply its own authorization; otherwise the request is signed.
        if !headers.iter().any(|(name, _)| name == "authorization") {
            let signature = sign_oauth1(method, &target, provider, integration, oauth_token, oauth_token_secret)
                .map_err(|e| PlanError::new(StatusCode::BAD_REQUEST, "proxy_request_failed", e.to_string()))?;
            headers.insert(0, ("authorization".into(), signature));
        }
    }
    Ok((target, headers))
}

/// The OAuth 1.0a signature of one request, over its method and final URL (not its body, as
/// in Nango).
fn sign_oauth1(
    method: &str,
    target: &Target,
    provider: &Provider,
    integration: &Integration,
    token: &str,
    token_secret: &str,
) -> Result<String, oauth1::SignError> {
    let scheme = if target.tls { "https" } else { "http" };
    let url = format!("{scheme}://{}{}", target.authority(), target.path_and_query);
    let (nonce, timestamp) = oauth1::nonce_and_time();
    let signer = oauth1::Signer {
        consumer_key: integration.credentials.client_id.as_deref().unwrap_or_default(),
        consumer_secret: integration.credentials.client_secret.as_ref().map(|s| s.expose()).unwrap_or_default(),
        token: Some(token),
        token_secret,
        private_key: integration.credentials.private_key.as_ref().map(|k| k.expose()),
    };
    let request = oauth1::Request {
        method,
        url: &url,
        params: &[],
        signature_method: oauth1::signature_method(provider),
        nonce: &nonce,
        timestamp,
    };
    oauth1::authorization(&signer, &request)
}

/// `Base-Url-Override` is honoured when the integration allows overrides, or when it names the
/// provider's own host.
fn check_override(url: &str, provider_base: Option<&str>, integration: &Integration) -> Result<(), PlanError> {
    let parsed = url::Url::parse(url).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    let Some(parsed) = parsed else {
        return Err(PlanError::new(
            StatusCode::BAD_REQUEST,
            "invalid_headers",
            "Base-Url-Override must be an http(s) URL",
        ));
    };
    if integration.allow_base_url_override {
        return Ok(());
    }
    let same_host = provider_base
        .and_then(|b| url::Url::parse(b).ok())
        .is_some_and(|b| b.host() == parsed.host() && b.port_or_known_default() == parsed.port_or_known_default());
    if same_host {
        Ok(())
    } else {
        Err(PlanError::new(
            StatusCode::BAD_REQUEST,
            "base_url_override_not_allowed",
            format!(
                "Base-Url-Override may only name the provider's own host unless integration `{}` sets allow_base_url_override",
                integration.unique_key
            ),
        ))
    }
}
