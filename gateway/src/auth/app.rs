//! The GitHub App (APP) install flow. It runs through the redirect flow's endpoints
//! ([`super::oauth2`]): the popup goes to the app's public page, `<app_link>/installations/new`
//! with the flow's `state`; GitHub sends the user back with `installation_id`, `setup_action`
//! and the state (to `/app-auth/connect`, or to `/oauth/callback`), and the connection's first
//! installation token is minted with the app's key as every renewal is ([`super::refresh`]).

use serde_json::{json, Map, Value};

use super::flow::Flow;
use super::token;
use crate::app::App;
use crate::catalog::template::{self, Scope};
use crate::catalog::Provider;
use crate::connection::Credentials;
use crate::integration::Integration;

/// The app's install page for this flow: the provider's `authorization_url` with
/// `connectionConfig.appPublicLink` (the integration's `app_link`, else the connect session's
/// default connection config), and the state. Never the frontend's `params`: the popup would
/// go wherever a page asked.
pub fn install_url(flow: &Flow, state: &str) -> Result<String, String> {
    let key = &flow.integration.unique_key;
    token::check_app_key(&flow.integration).map_err(|e| e.to_string())?;
    let from_session = flow
        .session
        .defaults(key)
        .and_then(|d| d.get("connection_config"))
        .and_then(|c| c.get("appPublicLink"))
        .and_then(Value::as_str);
    let link = flow.integration.credentials.app_link.as_deref().or(from_session).filter(|link| !link.is_empty());
    let Some(link) = link else {
        return Err(format!(
            "Integration `{key}` has no app_link: set it to the GitHub App's public page (https://github.com/apps/<name>)"
        ));
    };
    let provider = &flow.provider;
    let template_url = provider
        .authorization_url
        .as_deref()
        .ok_or_else(|| format!("Provider `{}` has no authorization_url", provider.name))?;
    let mut config = flow.connection_config.clone();
    config.insert("appPublicLink".into(), Value::String(link.trim_end_matches('/').to_string()));
    let vars = json!({ "connectionConfig": config });
    let text = template::render_with_fallback(template_url, &Scope::new(&vars)).complete().map_err(|missing| {
        format!("The authorization URL of provider `{}` needs {}", provider.name, missing.join(", "))
    })?;
    let mut url = url::Url::parse(&text)
        .map_err(|e| format!("The install page of integration `{key}` ({text}) is not a URL: {e}"))?;
    url.query_pairs_mut().append_pair("state", state);
    Ok(url.to_string())
}

/// The installation GitHub's answer names, or why it names none.
pub fn installation_id(query: &Map<String, Value>) -> Result<&str, (&'static str, String)> {
    let text = |name: &str| query.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    if text("setup_action") == Some("request") {
        return Err((
            "callback_err",
            "The installation was requested and waits for an organization owner's approval on GitHub; connect \
             again once it is approved"
                .to_string(),
        ));
    }
    let installation_id = text("installation_id")
        .ok_or_else(|| ("callback_err", "GitHub's answer has no installation_id".to_string()))?;
    if !installation_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(("callback_err", "GitHub's installation_id is not a number".to_string()));
    }
    Ok(installation_id)
}

/// The connection config and the first installation token of `installation_id`, for the install
/// flow and for an imported installation (`POST /connections`).
pub async fn credentials(
    app: &App,
    provider: &Provider,
    integration: &Integration,
    connection_config: &Map<String, Value>,
    installation_id: &str,
) -> Result<(Credentials, Map<String, Value>), (&'static str, String)> {
    let mut config = connection_config.clone();
    config.insert("installation_id".into(), Value::String(installation_id.to_string()));
    if let Some(app_id) = integration.credentials.app_id.as_ref().or(integration.credentials.client_id.as_ref()) {
        config.insert("app_id".into(), Value::String(app_id.clone()));
    }
    let credentials = app.refresh.app_credentials(provider, integration, &config).await.map_err(|e| {
        tracing::info!(provider_config_key = %integration.unique_key, kind = e.kind(), "minting the installation token failed: {e}");
        (e.kind(), e.to_string())
    })?;
    Ok((credentials, config))
}
