//! The OAuth 2 token endpoint. Every grant (authorization code, refresh token, client
//! credentials) is one POST built from the provider's entry: the interpolated `token_url`, the
//! body in `body_format`, the client authenticated as `token_request_auth_method` (or
//! `authorization_method`) says, `token_params`/`refresh_params` added. The answer becomes
//! [`Tokens`]; a refusal keeps the provider's own `error` and `error_description`.
//!
//! Nothing here logs the code, the verifier, the client secret or a token: requests are not
//! logged at all, and errors name only the endpoint's host and what the provider said.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

use crate::catalog::template::{self, Layers, Scope};
use crate::catalog::{AuthMode, Provider, TokenUrl};
use crate::connection::Credentials;
use crate::integration::Integration;

/// How long one token request may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// How long an OAUTH2_CC token lives when the provider does not say (as Nango assumes).
const DEFAULT_CC_LIFETIME: chrono::Duration = chrono::Duration::minutes(55);

/// The client for token endpoints and credential checks.
pub fn http_client() -> reqwest::Client {
    crate::http::client("token endpoints", Some(TIMEOUT))
}

/// The OAuth client that authenticates at the token endpoint.
#[derive(Clone, Copy)]
pub struct Client<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// The grant a token request asks for.
#[derive(Clone, Copy)]
pub enum Grant<'a> {
    AuthorizationCode { code: &'a str, redirect_uri: &'a str, code_verifier: Option<&'a str> },
    RefreshToken { refresh_token: &'a str },
    ClientCredentials { scopes: &'a [String] },
}

impl Grant<'_> {
    fn is_client_credentials(&self) -> bool {
        matches!(self, Grant::ClientCredentials { .. })
    }
}

/// What a token endpoint granted.
#[derive(Clone, PartialEq)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub token_type: Option<String>,
    /// The whole response, as Nango keeps it in `credentials.raw`.
    pub raw: Value,
    /// The provider's `token_response_metadata` values (and, after a refresh,
    /// `refresh_token_response_metadata`), keyed by their dotted path, for the connection's
    /// `connection_config`.
    pub metadata: Map<String, Value>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_at", &self.expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// OAUTH2 credentials for a new connection.
    pub fn into_credentials(self, config_override: Option<Value>) -> Credentials {
        Credentials::OAuth2 {
            access_token: self.access_token,
            refresh_token: self.refresh_token,
            expires_at: self.expires_at,
            raw: self.raw,
            config_override,
        }
    }

    /// The credentials after a refresh of `previous`: the new token, the previous refresh token
    /// when the provider sent none (a rotating refresh token replaces it), the client override,
    /// client credentials and a TWO_STEP user's fields carried over.
    pub fn merge_into(self, previous: &Credentials) -> Credentials {
        match previous {
            Credentials::OAuth2Cc { client_id, client_secret, client_certificate, client_private_key, .. } => {
                Credentials::OAuth2Cc {
                    token: self.access_token,
                    expires_at: Some(self.expires_at.unwrap_or_else(|| Utc::now() + DEFAULT_CC_LIFETIME)),
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    client_certificate: client_certificate.clone(),
                    client_private_key: client_private_key.clone(),
                    raw: self.raw,
                }
            }
            Credentials::OAuth2 { refresh_token, config_override, .. } => Credentials::OAuth2 {
                access_token: self.access_token,
                refresh_token: self.refresh_token.or_else(|| refresh_token.clone()),
                expires_at: self.expires_at,
                raw: self.raw,
                config_override: config_override.clone(),
            },
            Credentials::App { .. } => {
                Credentials::App { access_token: self.access_token, expires_at: self.expires_at, raw: self.raw }
            }
            Credentials::Jwt { fields, .. } => {
                Credentials::Jwt { token: self.access_token, expires_at: self.expires_at, fields: fields.clone() }
            }
            Credentials::TwoStep { refresh_token, fields, .. } => Credentials::TwoStep {
                token: self.access_token,
                refresh_token: self.refresh_token.or_else(|| refresh_token.clone()),
                expires_at: self.expires_at,
                raw: self.raw,
                fields: fields.clone(),
            },
            _ => self.into_credentials(None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("provider `{0}` has no token_url")]
    NoTokenUrl(String),
    #[error("the {place} of provider `{provider}` needs {}, which the connection does not have", describe(.missing))]
    MissingConfig { provider: String, place: String, missing: Vec<String> },
    #[error("integration `{0}` has no OAuth client id and secret; set client_id and client_secret")]
    NoClient(String),
    #[error("integration `{0}` has no usable GitHub App id and RSA private key (PEM, or base64 of PEM); set app_id and private_key")]
    NoAppKey(String),
    #[error("provider `{provider}` uses {what}, which this version of Latchkey does not support")]
    Unsupported { provider: String, what: String },
    #[error("the token URL `{0}` is not an absolute http(s) URL")]
    BadUrl(String),
    #[error("the token endpoint at {host} did not answer within {} s", TIMEOUT.as_secs())]
    Timeout { host: String },
    #[error("cannot reach the token endpoint at {host}: {reason}")]
    Network { host: String, reason: String },
    #[error("the provider refused the token request (HTTP {status}): {error}{}", .description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Provider { status: u16, error: String, description: Option<String> },
    #[error("the token endpoint answered HTTP {status}{}", .excerpt.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    Status { status: u16, excerpt: Option<String> },
    #[error("the token endpoint's answer is not usable: {0}")]
    Malformed(String),
    #[error("signing the token failed: {0}")]
    Jwt(#[from] super::jwt::JwtError),
}

fn describe(missing: &[String]) -> String {
    let names: Vec<String> = missing
        .iter()
        .map(|m| {
            let field = m.strip_prefix("connectionConfig.").unwrap_or(m);
            format!("connection config `{field}`")
        })
        .collect();
    names.join(" and ")
}

impl TokenError {
    /// Whether the same request may succeed later without anyone acting: the endpoint was
    /// unreachable, slow, overloaded or rate limiting. A refusal such as `invalid_grant` is not.
    pub fn is_transient(&self) -> bool {
        match self {
            TokenError::Timeout { .. } | TokenError::Network { .. } => true,
            TokenError::Provider { status, .. } | TokenError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// A short name of the failure, for webhooks and API errors.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::NoTokenUrl(_)
            | TokenError::MissingConfig { .. }
            | TokenError::NoClient(_)
            | TokenError::NoAppKey(_)
            | TokenError::Unsupported { .. }
            | TokenError::BadUrl(_) => "invalid_configuration",
            TokenError::Timeout { .. } => "token_endpoint_timeout",
            TokenError::Network { .. } => "token_endpoint_unreachable",
            TokenError::Provider { .. } => "token_refused",
            TokenError::Status { .. } => "token_endpoint_error",
            TokenError::Malformed(_) => "token_response_malformed",
            TokenError::Jwt(_) => "invalid_credentials",
        }
    }
}

/// Asks the provider's token endpoint for tokens. `client` replaces the integration's OAuth
/// client (a connection's `config_override`, or an OAUTH2_CC connection's own client).
pub async fn request(
    http: &reqwest::Client,
    provider: &Provider,
    integration: &Integration,
    connection_config: &Map<String, Value>,
    client: Option<Client<'_>>,
    grant: Grant<'_>,
) -> Result<Tokens, TokenError> {
    let prepared = prepare(provider, integration, connection_config, client, &grant)?;
    let host = prepared.url.host_str().map(|h| match prepared.url.port() {
        Some(port) => format!("{h}:{port}"),
        None => h.to_string(),
    });
    let host = host.unwrap_or_default();
    let mut builder = http.post(prepared.url).header(reqwest::header::ACCEPT, "application/json");
    if let Some(authorization) = prepared.authorization {
        builder = builder.header(reqwest::header::AUTHORIZATION, authorization);
    }
    if let Some((content_type, body)) = prepared.body {
        builder = builder.header(reqwest::header::CONTENT_TYPE, content_type).body(body);
    }
    let response = builder.send().await.map_err(|e| transport_error(e, &host))?;
    let status = response.status().as_u16();
    let content_type =
        response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = response.bytes().await.map_err(|e| transport_error(e, &host))?;
    parse(provider, &grant, status, content_type.as_deref(), &body, Utc::now())
}

/// A GitHub App installation token: a JWT signed with the app's private key (RS256, issued by
/// the app id, valid ten minutes) traded at the provider's token URL (which names the
/// installation through `${connectionConfig.installation_id}`).
pub async fn installation_token(
    http: &reqwest::Client,
    provider: &Provider,
    integration: &Integration,
    connection_config: &Map<String, Value>,
) -> Result<Tokens, TokenError> {
    let url = token_url(provider, connection_config, AuthMode::App)?;
    let jwt = app_jwt(integration, Utc::now())?;
    let host = url.host_str().map(|h| url.port().map_or(h.to_string(), |p| format!("{h}:{p}"))).unwrap_or_default();
    let response = http
        .post(url)
        .header(reqwest::header::ACCEPT, "application/vnd.github+json")
        .header(reqwest::header::AUTHORIZATION, format!("Bearer {jwt}"))
        .send()
        .await
        .map_err(|e| transport_error(e, &host))?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| transport_error(e, &host))?;
    let decoded = decode(Some("application/json"), &body);
    if !(200..300).contains(&status) {
        if let Some((error, description)) = decoded.as_ref().and_then(provider_error) {
            return Err(TokenError::Provider { status, error, description });
        }
        return Err(TokenError::Status { status, excerpt: excerpt(&body) });
    }
    let raw =
        decoded.ok_or_else(|| TokenError::Malformed(format!("HTTP {status} with a body that is not a JSON object")))?;
    let access_token = raw
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| TokenError::Malformed("the response has no token".into()))?;
    let expires_at = match raw.get("expires_at").filter(|v| !v.is_null()) {
        Some(v) => Some(
            crate::time::parse_instant(v)
                .ok_or_else(|| TokenError::Malformed(format!("expires_at {v} is not a date")))?,
        ),
        None => None,
    };
    Ok(Tokens { access_token, refresh_token: None, expires_at, token_type: None, raw, metadata: Map::new() })
}

/// Whether the integration has what installation tokens need (an app id and a usable RSA
/// key), checked before a user is sent to install the app.
pub fn check_app_key(integration: &Integration) -> Result<(), TokenError> {
    app_jwt(integration, Utc::now()).map(|_| ())
}

/// The app's JWT. The key is PEM, or base64 of PEM as Nango stores it.
fn app_jwt(integration: &Integration, now: DateTime<Utc>) -> Result<String, TokenError> {
    let no_key = || TokenError::NoAppKey(integration.unique_key.clone());
    let credentials = &integration.credentials;
    let app_id = credentials.app_id.as_deref().or(credentials.client_id.as_deref()).ok_or_else(no_key)?;
    let key = credentials.private_key.as_ref().or(credentials.client_secret.as_ref()).ok_or_else(no_key)?;
    let pem = super::jwt::pem(key.expose()).ok_or_else(no_key)?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).map_err(|_| no_key())?;
    // Issued a minute early: GitHub refuses tokens from a clock that runs ahead of its own.
    let claims = serde_json::json!({
        "iat": now.timestamp() - 60,
        "exp": now.timestamp() + 540,
        "iss": app_id,
    });
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key)
        .map_err(|_| no_key())
}

fn transport_error(e: reqwest::Error, host: &str) -> TokenError {
    if e.is_timeout() {
        return TokenError::Timeout { host: host.to_string() };
    }
    // The URL may carry parameters (`body_format: query`); the message must not.
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        reason.push_str(": ");
        reason.push_str(&inner.to_string());
        source = inner.source();
    }
    TokenError::Network { host: host.to_string(), reason }
}

/// A token request ready to send. Not `Debug`: it holds the code and the client secret.
struct Prepared {
    url: url::Url,
    authorization: Option<String>,
    body: Option<(&'static str, Vec<u8>)>,
}

/// `encodeURIComponent`'s set: everything but letters, digits and `-_.!~*'()`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

fn prepare(
    provider: &Provider,
    integration: &Integration,
    connection_config: &Map<String, Value>,
    client: Option<Client<'_>>,
    grant: &Grant<'_>,
) -> Result<Prepared, TokenError> {
    let mode = if grant.is_client_credentials() { AuthMode::OAuth2Cc } else { AuthMode::OAuth2 };
    let mut url = token_url(provider, connection_config, mode)?;
    let client = match client {
        Some(c) => c,
        None => match (&integration.credentials.client_id, &integration.credentials.client_secret) {
            (Some(id), Some(secret)) => Client { id, secret: secret.expose() },
            _ => return Err(TokenError::NoClient(integration.unique_key.clone())),
        },
    };

    let mut params: Vec<(String, String)> = Vec::new();
    let template_params = |params: &mut Vec<(String, String)>,
                           template: &Map<String, Value>,
                           place: &str,
                           keep_grant_type: bool|
     -> Result<(), TokenError> {
        for (name, value) in interpolate_params(provider, template, connection_config, place)? {
            if keep_grant_type || name != "grant_type" {
                set(params, &name, value);
            }
        }
        Ok(())
    };
    match grant {
        Grant::AuthorizationCode { code, redirect_uri, code_verifier } => {
            set(&mut params, "grant_type", "authorization_code".into());
            set(&mut params, "code", code.to_string());
            set(&mut params, "redirect_uri", redirect_uri.to_string());
            template_params(&mut params, &provider.token_params, "token_params", true)?;
            if let Some(verifier) = code_verifier.filter(|_| !provider.disable_pkce) {
                set(&mut params, "code_verifier", verifier.to_string());
            }
        }
        Grant::RefreshToken { refresh_token } => {
            set(&mut params, "grant_type", "refresh_token".into());
            set(&mut params, "refresh_token", refresh_token.to_string());
            match &provider.refresh_params {
                Some(refresh_params) => template_params(&mut params, refresh_params, "refresh_params", true)?,
                // Nango lets a `grant_type` of the code exchange in token_params turn the
                // refresh into another code exchange, which always fails; it is left out here.
                None => template_params(&mut params, &provider.token_params, "token_params", false)?,
            }
        }
        Grant::ClientCredentials { scopes } => {
            set(&mut params, "grant_type", "client_credentials".into());
            template_params(&mut params, &provider.token_params, "token_params", true)?;
            if !scopes.is_empty() {
                let separator = provider.scope_separator.as_deref().unwrap_or(" ");
                set(&mut params, "scope", scopes.join(separator));
            }
        }
    }

    let mut authorization = None;
    let basic = |id: &str, secret: &str| {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    };
    let cc = grant.is_client_credentials();
    match provider.token_request_auth_method.as_deref() {
        Some("private_key_jwt") => {
            return Err(TokenError::Unsupported {
                provider: provider.name.clone(),
                what: "token_request_auth_method `private_key_jwt`".into(),
            })
        }
        Some("basic") if cc => authorization = Some(basic(client.id, client.secret)),
        Some("custom") if cc => {
            set(&mut params, "username", client.id.to_string());
            set(&mut params, "password", client.secret.to_string());
        }
        // For the code and refresh grants Nango sends Basic and keeps the client in the body;
        // some providers of this kind read one, some the other.
        Some("basic") => {
            authorization = Some(basic(client.id, client.secret));
            set(&mut params, "client_id", client.id.to_string());
            set(&mut params, "client_secret", client.secret.to_string());
        }
        _ if provider.authorization_method.as_deref() == Some("header") => {
            // RFC 6749 appendix B: each part form-encoded before joining.
            let form = |s: &str| utf8_percent_encode(s, URI_COMPONENT).to_string().replace("%20", "+");
            authorization = Some(basic(&form(client.id), &form(client.secret)));
        }
        _ => {
            set(&mut params, "client_id", client.id.to_string());
            set(&mut params, "client_secret", client.secret.to_string());
        }
    }

    let body = match provider.body_format.as_deref() {
        None | Some("form") => {
            let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
            Some(("application/x-www-form-urlencoded", encoded.into_bytes()))
        }
        Some("json") => {
            let object: Map<String, Value> = params.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            Some(("application/json", Value::Object(object).to_string().into_bytes()))
        }
        Some("query") if cc => {
            url.query_pairs_mut().extend_pairs(&params);
            None
        }
        Some(other) => {
            return Err(TokenError::Unsupported {
                provider: provider.name.clone(),
                what: format!("body_format `{other}` for this grant"),
            })
        }
    };
    Ok(Prepared { url, authorization, body })
}

/// Sets `name`, replacing an earlier value: later sources win, as in Nango.
fn set(params: &mut Vec<(String, String)>, name: &str, value: String) {
    match params.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value,
        None => params.push((name.to_string(), value)),
    }
}

/// The token URL with the connection's config filled in, each value URL-encoded unless the
/// provider opts out (`authorization_url_skip_encode: [base_url]`).
fn token_url(
    provider: &Provider,
    connection_config: &Map<String, Value>,
    mode: AuthMode,
) -> Result<url::Url, TokenError> {
    let template_text = match &provider.token_url {
        Some(TokenUrl::One(url)) => url.as_str(),
        Some(TokenUrl::PerMode(urls)) => {
            urls.get(mode.as_str()).ok_or_else(|| TokenError::NoTokenUrl(provider.name.clone()))?.as_str()
        }
        None => return Err(TokenError::NoTokenUrl(provider.name.clone())),
    };
    let skip_encode = provider
        .entry
        .get("authorization_url_skip_encode")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(|v| v == "base_url"));
    let encoded: Map<String, Value> = connection_config
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) if !skip_encode => {
                (k.clone(), Value::String(utf8_percent_encode(s, URI_COMPONENT).to_string()))
            }
            other => (k.clone(), other.clone()),
        })
        .collect();
    let nested = Value::Object(Map::from_iter([("connectionConfig".to_string(), Value::Object(encoded.clone()))]));
    let flat = Value::Object(encoded);
    let vars = Layers(vec![&nested, &flat]);
    let scope = Scope::new(&vars);
    let text = template::render_with_fallback(template_text, &scope).complete().map_err(|missing| {
        TokenError::MissingConfig { provider: provider.name.clone(), place: "token_url".into(), missing }
    })?;
    let url = url::Url::parse(text.trim()).map_err(|_| TokenError::BadUrl(text.clone()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(TokenError::BadUrl(text));
    }
    Ok(url)
}

/// `token_params` or `refresh_params` with `${connectionConfig.*}` filled in; empty values are
/// left out.
fn interpolate_params(
    provider: &Provider,
    template_params: &Map<String, Value>,
    connection_config: &Map<String, Value>,
    place: &str,
) -> Result<Vec<(String, String)>, TokenError> {
    let vars =
        Value::Object(Map::from_iter([("connectionConfig".to_string(), Value::Object(connection_config.clone()))]));
    let scope = Scope::new(&vars);
    let mut out = Vec::new();
    for (name, value) in template_params {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => template::render_with_fallback(s, &scope).complete().map_err(|missing| {
                TokenError::MissingConfig { provider: provider.name.clone(), place: format!("{place}.{name}"), missing }
            })?,
            other => other.to_string(),
        };
        out.push((name.clone(), text));
    }
    Ok(out)
}

/// Reads a token endpoint's answer.
fn parse(
    provider: &Provider,
    grant: &Grant<'_>,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Tokens, TokenError> {
    let decoded = decode(content_type, body);
    if !(200..300).contains(&status) {
        if let Some((error, description)) = decoded.as_ref().and_then(provider_error) {
            return Err(TokenError::Provider { status, error, description });
        }
        return Err(TokenError::Status { status, excerpt: excerpt(body) });
    }
    let raw = decoded.ok_or_else(|| {
        TokenError::Malformed(format!(
            "HTTP {status} with a body that is neither a JSON object nor form-encoded ({})",
            content_type.unwrap_or("no content type")
        ))
    })?;
    let alternate = provider.entry.get("alternate_access_token_response_path").and_then(Value::as_str);
    let context = match alternate {
        Some(path) if raw.get("access_token").is_none() => match lookup(&raw, path) {
            Some(Value::Object(inner)) => Value::Object(inner.clone()),
            Some(token @ Value::String(_)) => {
                let mut with_token = raw.as_object().cloned().unwrap_or_default();
                with_token.insert("access_token".into(), token.clone());
                Value::Object(with_token)
            }
            _ => raw.clone(),
        },
        _ => raw.clone(),
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let mut access_token = text(context.get("access_token"));
    if access_token.is_none() && grant.is_client_credentials() {
        access_token = text(lookup(&context, "data.token")).or_else(|| text(context.get("jwt")));
    }
    let Some(access_token) = access_token else {
        // Some providers (GitHub among them) answer 200 with an error object.
        if let Some((error, description)) = provider_error(&raw) {
            return Err(TokenError::Provider { status, error, description });
        }
        return Err(TokenError::Malformed("the response has no access_token".into()));
    };
    let expires_at = expiry(provider, &context, now)?;
    let refresh_only = match grant {
        Grant::RefreshToken { .. } => provider.refresh_token_response_metadata.as_slice(),
        _ => &[],
    };
    let metadata = provider
        .token_response_metadata
        .iter()
        .chain(refresh_only)
        .filter_map(|path| match lookup(&raw, path) {
            Some(v @ (Value::String(_) | Value::Bool(_))) => Some((path.clone(), v.clone())),
            _ => None,
        })
        .collect();
    Ok(Tokens {
        access_token,
        refresh_token: text(context.get("refresh_token")),
        expires_at,
        token_type: text(context.get("token_type")),
        raw,
        metadata,
    })
}

/// `expires_at` when given (ISO 8601 or epoch), else now + `expires_in` (seconds, or
/// milliseconds when the provider says so); none means the token does not expire.
fn expiry(provider: &Provider, context: &Value, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, TokenError> {
    if let Some(value) = context.get("expires_at").filter(|v| !v.is_null()) {
        return crate::time::parse_instant(value)
            .map(Some)
            .ok_or_else(|| TokenError::Malformed(format!("expires_at {value} is not a date")));
    }
    let Some(value) = context.get("expires_in").filter(|v| !v.is_null()) else { return Ok(None) };
    let amount = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite() && *n >= 0.0)
    .ok_or_else(|| TokenError::Malformed(format!("expires_in {value} is not a number of seconds")))?;
    let in_ms = provider.entry.get("expires_in_unit").and_then(Value::as_str) == Some("milliseconds");
    let millis = if in_ms { amount } else { amount * 1000.0 };
    Ok(Some(now + chrono::Duration::milliseconds(millis as i64)))
}

/// The body as JSON, or as a form (some endpoints answer `access_token=…&token_type=…`).
fn decode(content_type: Option<&str>, body: &[u8]) -> Option<Value> {
    if let Ok(value @ Value::Object(_)) = serde_json::from_slice::<Value>(body) {
        return Some(value);
    }
    let is_form = content_type.is_some_and(|c| c.contains("application/x-www-form-urlencoded"))
        || content_type.is_some_and(|c| c.starts_with("text/plain"));
    if !is_form {
        return None;
    }
    let pairs: Map<String, Value> =
        url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect();
    let looks_like_tokens = pairs.contains_key("access_token") || pairs.contains_key("error");
    looks_like_tokens.then_some(Value::Object(pairs))
}

/// The provider's `error` and `error_description` (or a bare `message`), verbatim.
fn provider_error(value: &Value) -> Option<(String, Option<String>)> {
    let Some(error) = value.get("error") else {
        return value.get("message").and_then(Value::as_str).map(|m| (m.to_string(), None));
    };
    let error = match error {
        Value::String(s) => s.clone(),
        Value::Object(inner) => inner
            .get("code")
            .or_else(|| inner.get("type"))
            .or_else(|| inner.get("message"))
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))?,
        _ => return None,
    };
    let description = value
        .get("error_description")
        .or_else(|| value.get("error").and_then(|e| e.get("message")))
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|d| *d != error);
    Some((error, description))
}

/// The start of a non-JSON error body, as text, for the message.
fn excerpt(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    let cut: String = text.chars().take(200).collect();
    Some(if cut.len() < text.len() { format!("{cut}…") } else { cut })
}

/// A value at a dotted path; a key may itself contain dots.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    template::walk(value, &path.split('.').collect::<Vec<_>>())
}

#[cfg(test)]
mod tests;
