//! Credentials into a request: the upstream base URL, the auth header for the connection's
//! credential type, and the provider's header and query templates, rendered with the
//! connection's config, metadata and credentials.

use std::borrow::Cow;
use std::cell::OnceCell;

use base64::Engine as _;
use serde_json::Value;

use crate::catalog::template::{self, Scope, Vars};
use crate::catalog::Provider;
use crate::connection::{Connection, Credentials};
use crate::integration::Integration;

/// The variables a provider's proxy templates see.
pub struct ProxyVars<'a> {
    pub connection: &'a Connection,
    pub integration: &'a Integration,
    pub method: &'a str,
    credentials: OnceCell<Value>,
}

impl<'a> ProxyVars<'a> {
    pub fn new(connection: &'a Connection, integration: &'a Integration, method: &'a str) -> Self {
        ProxyVars { connection, integration, method, credentials: OnceCell::new() }
    }

    fn credentials_json(&self) -> &Value {
        self.credentials.get_or_init(|| self.connection.credentials.to_json())
    }

    fn access_token(&self) -> Option<&str> {
        match &self.connection.credentials {
            Credentials::OAuth2 { access_token, .. } | Credentials::App { access_token, .. } => Some(access_token),
            Credentials::OAuth2Cc { token, .. }
            | Credentials::TwoStep { token, .. }
            | Credentials::Jwt { token, .. } => Some(token),
            _ => None,
        }
    }
}

impl Vars for ProxyVars<'_> {
    fn lookup(&self, name: &str) -> Option<Cow<'_, str>> {
        let (head, rest) = name.split_once('.').unwrap_or((name, ""));
        match head {
            "connectionConfig" | "connection_config" if !rest.is_empty() => {
                self.connection.connection_config.lookup(rest)
            }
            "metadata" if !rest.is_empty() => self.connection.metadata.as_ref().and_then(|m| m.lookup(rest)),
            "credentials" if !rest.is_empty() => self.credentials_json().lookup(rest),
            "connection_id" | "connectionId" => Some(Cow::Borrowed(&self.connection.connection_id)),
            "accessToken" => self.access_token().map(Cow::Borrowed),
            // The most common template of all, read without building the credentials' JSON.
            "apiKey" => match &self.connection.credentials {
                Credentials::ApiKey { api_key } => Some(Cow::Borrowed(api_key)),
                _ => self.credentials_json().lookup(name),
            },
            "clientId" => self.integration.credentials.client_id.as_deref().map(Cow::Borrowed),
            "clientSecret" => self.integration.credentials.client_secret.as_ref().map(|s| Cow::Borrowed(s.expose())),
            "method" => Some(Cow::Borrowed(self.method)),
            // Credential fields are also visible at the top level: `${apiKey}`, `${username}`.
            _ => self.credentials_json().lookup(name),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("provider `{0}` has no proxy base URL; send Base-Url-Override with the API's URL")]
    NoBaseUrl(String),
    #[error("the base URL of provider `{provider}` needs {}, which connection `{connection}` does not have; set it in the connection's connection_config", describe(.missing))]
    MissingForBaseUrl { provider: String, connection: String, missing: Vec<String> },
    #[error("header `{header}` of provider `{provider}` needs {}, which connection `{connection}` does not have", describe(.missing))]
    MissingForHeader { provider: String, header: String, connection: String, missing: Vec<String> },
    #[error("proxying {0} connections needs request signing, which this version of Latchkey does not do")]
    Unsupported(&'static str),
}

fn describe(missing: &[String]) -> String {
    let names: Vec<String> = missing
        .iter()
        .map(|m| {
            m.strip_prefix("connectionConfig.")
                .map(|f| format!("connection config `{f}`"))
                .unwrap_or_else(|| format!("`{m}`"))
        })
        .collect();
    names.join(" and ")
}

/// The rendered base URL.
pub fn base_url(provider: &Provider, vars: &ProxyVars<'_>, scope: &Scope<'_>) -> Result<String, InjectError> {
    let template = provider.base_url().ok_or_else(|| InjectError::NoBaseUrl(provider.name.clone()))?;
    template::render_with_fallback(template, scope).complete().map_err(|missing| InjectError::MissingForBaseUrl {
        provider: provider.name.clone(),
        connection: vars.connection.connection_id.clone(),
        missing,
    })
}

/// Headers to set upstream, lower-case names, in order: the default auth header for the
/// credential type, then the provider's templates (which win).
pub fn headers(
    provider: &Provider,
    vars: &ProxyVars<'_>,
    scope: &Scope<'_>,
) -> Result<Vec<(String, String)>, InjectError> {
    let mut out: Vec<(String, String)> = Vec::new();
    match &vars.connection.credentials {
        Credentials::OAuth2 { access_token, .. } | Credentials::App { access_token, .. } => {
            out.push(("authorization".into(), format!("Bearer {access_token}")))
        }
        // A TWO_STEP or JWT token is a bearer token unless a template places it (`${accessToken}`).
        Credentials::OAuth2Cc { token, .. } | Credentials::TwoStep { token, .. } | Credentials::Jwt { token, .. } => {
            out.push(("authorization".into(), format!("Bearer {token}")))
        }
        Credentials::Basic { username, password } => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            out.push(("authorization".into(), format!("Basic {encoded}")));
        }
        // Signed per request by the planner, which knows the final URL.
        Credentials::OAuth1 { .. } => {}
        Credentials::Tba { .. } => return Err(InjectError::Unsupported("TBA")),
        Credentials::ApiKey { .. } | Credentials::None => {}
    }
    for (name, template_text) in provider.proxy.iter().flat_map(|p| &p.headers) {
        let name = name.to_ascii_lowercase();
        let rendered = template::render_with_fallback(template_text, scope);
        if !rendered.is_complete() {
            // An optional header (one that reads connection config) is left out; one that
            // needs a credential is an error rather than `${…}` sent upstream.
            let optional =
                rendered.missing.iter().all(|m| m.starts_with("connectionConfig.") || m.starts_with("metadata."));
            if optional {
                continue;
            }
            return Err(InjectError::MissingForHeader {
                provider: provider.name.clone(),
                header: name,
                connection: vars.connection.connection_id.clone(),
                missing: rendered.missing,
            });
        }
        out.retain(|(n, _)| *n != name);
        out.push((name, rendered.text));
    }
    Ok(out)
}

/// The provider's query parameters; entries that cannot be rendered are left out, as in Nango.
pub fn query(provider: &Provider, scope: &Scope<'_>) -> Vec<(String, String)> {
    provider
        .proxy
        .iter()
        .flat_map(|p| &p.query)
        .filter_map(|(name, template_text)| {
            template::render_with_fallback(template_text, scope).complete().ok().map(|v| (name.clone(), v))
        })
        .collect()
}
