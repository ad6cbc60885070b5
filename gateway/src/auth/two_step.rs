//! TWO_STEP: the end user's fields (a user name and password, a key pair…) are traded at the
//! provider's `token_url` for a token, which the proxy then sends. The request is built from the
//! entry: `token_params` and `token_headers` rendered with `${credentials.*}` and
//! `${connectionConfig.*}`, JSON unless `body_format: form`, POST unless
//! `token_request_method: GET`; the token, refresh token and expiry are read at the dot paths of
//! `token_response`.
//!
//! Renewal ([`super::refresh`]) repeats the same exchange with the fields stored in the
//! connection's credentials; when the entry has `refresh_token_params` or
//! `refresh_token_headers` and the connection a refresh token, those go to `refresh_url` (else
//! `token_url`) instead, with `${refresh_token}` filled in.

use chrono::{Duration, Utc};
use serde_json::{json, Map, Value};

use super::token::{TokenError, Tokens};
use crate::catalog::template::{self, walk, Layers, Scope};
use crate::catalog::{Provider, TokenUrl};
use crate::connection::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum TwoStepError {
    #[error("provider `{0}` has no token_url")]
    NoTokenUrl(String),
    #[error("the token request of provider `{provider}` needs {}, which were not given", .missing.join(", "))]
    Missing { provider: String, missing: Vec<String> },
    #[error("cannot reach the token endpoint at {host}: {reason}")]
    Network { host: String, reason: String },
    #[error("the provider refused the credentials (HTTP {status}){}", .detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused { status: u16, detail: Option<String> },
    #[error("the provider's answer has no token at `{0}`")]
    NoToken(String),
}

/// Asks the provider for a token with the end user's `fields`: the credentials of a new
/// connection.
pub async fn request(
    http: &reqwest::Client,
    provider: &Provider,
    connection_config: &Map<String, Value>,
    fields: &Map<String, Value>,
) -> Result<Credentials, TwoStepError> {
    let tokens = exchange(http, provider, connection_config, fields, None).await?;
    Ok(Credentials::TwoStep {
        token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        expires_at: tokens.expires_at,
        raw: tokens.raw,
        fields: fields.clone(),
    })
}

/// The token exchange itself, for a new connection and for a renewal (which may have a
/// `refresh_token`).
pub async fn exchange(
    http: &reqwest::Client,
    provider: &Provider,
    connection_config: &Map<String, Value>,
    fields: &Map<String, Value>,
    refresh_token: Option<&str>,
) -> Result<Tokens, TwoStepError> {
    let (method, url, headers, body) = prepare(provider, connection_config, fields, refresh_token)?;
    let host = url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
    let mut builder = http.request(method, &url).header(reqwest::header::ACCEPT, "application/json");
    for (name, value) in &headers {
        builder = builder.header(name, value);
    }
    if let Some((content_type, body)) = body {
        // The entry's own content type wins.
        if !headers.iter().any(|(name, _)| name == "content-type") {
            builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        builder = builder.body(body);
    }
    let response = builder
        .send()
        .await
        .map_err(|e| TwoStepError::Network { host: host.clone(), reason: e.without_url().to_string() })?;
    let status = response.status().as_u16();
    let text =
        response.text().await.map_err(|e| TwoStepError::Network { host, reason: e.without_url().to_string() })?;
    if status != 200 && status != 201 {
        return Err(TwoStepError::Refused { status, detail: refusal(&text) });
    }
    let raw: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    parse(provider, raw)
}

/// What the provider said when refusing: its `error`/`message` fields, else the start of the text.
fn refusal(text: &str) -> Option<String> {
    let json: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let said = ["error_description", "message", "error"].iter().find_map(|k| json.get(*k).and_then(Value::as_str));
    let detail = said.map(str::to_string).unwrap_or_else(|| text.trim().chars().take(200).collect());
    (!detail.is_empty()).then_some(detail)
}

type Prepared = (reqwest::Method, String, Vec<(String, String)>, Option<(&'static str, String)>);

fn prepare(
    provider: &Provider,
    connection_config: &Map<String, Value>,
    fields: &Map<String, Value>,
    refresh_token: Option<&str>,
) -> Result<Prepared, TwoStepError> {
    let object = |name: &str| provider.entry.get(name).and_then(Value::as_object);
    let (refresh_params, refresh_headers) = (object("refresh_token_params"), object("refresh_token_headers"));
    let refresh_token = refresh_token.filter(|_| refresh_params.is_some() || refresh_headers.is_some());
    let config = Value::Object(connection_config.clone());
    let mut entered = fields.clone();
    if let Some(token) = refresh_token {
        entered.insert("refresh_token".into(), Value::String(token.to_string()));
    }
    let entered = Value::Object(entered);
    let named = json!({ "connectionConfig": config, "connection_config": config, "credentials": entered });
    let layers = Layers(vec![&named, &entered]);
    let scope = Scope::new(&layers);
    let mut missing = Vec::new();
    let mut render = |text: &str| {
        let rendered = template::render_with_fallback(text, &scope);
        missing.extend(rendered.missing.iter().cloned());
        rendered.text
    };
    let url = match (&provider.token_url, &provider.refresh_url) {
        (_, Some(url)) if refresh_token.is_some() => render(url),
        (Some(TokenUrl::One(url)), _) => render(url),
        _ => return Err(TwoStepError::NoTokenUrl(provider.name.clone())),
    };
    let empty = Map::new();
    let (param_templates, header_templates) = match refresh_token {
        Some(_) => (refresh_params.unwrap_or(&empty), refresh_headers.or(object("token_headers"))),
        None => (&provider.token_params, object("token_headers")),
    };
    let params: Vec<(String, Value)> = param_templates
        .iter()
        .map(|(k, v)| (k.clone(), if let Value::String(s) = v { Value::String(render(s)) } else { v.clone() }))
        .collect();
    let headers: Vec<(String, String)> = header_templates
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.to_ascii_lowercase(), render(v.as_str().unwrap_or_default())))
        .collect();
    if !missing.is_empty() {
        missing.dedup();
        return Err(TwoStepError::Missing { provider: provider.name.clone(), missing });
    }
    let get = provider.entry.get("token_request_method").and_then(Value::as_str) == Some("GET");
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    if get {
        let mut url = url::Url::parse(&url).map_err(|_| TwoStepError::NoTokenUrl(provider.name.clone()))?;
        url.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (k, text(v))));
        return Ok((reqwest::Method::GET, url.to_string(), headers, None));
    }
    let body = match provider.body_format.as_deref() {
        Some("form") => {
            let form = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter().map(|(k, v)| (k, text(v))))
                .finish();
            ("application/x-www-form-urlencoded", form)
        }
        _ => ("application/json", Value::Object(params.into_iter().collect()).to_string()),
    };
    Ok((reqwest::Method::POST, url, headers, Some(body)))
}

fn parse(provider: &Provider, raw: Value) -> Result<Tokens, TwoStepError> {
    let spec = provider.entry.get("token_response").cloned().unwrap_or(Value::Null);
    let at = |key: &str| -> Option<&Value> {
        let path = spec.get(key)?.as_str()?;
        walk(&raw, &path.split('.').collect::<Vec<_>>())
    };
    let token_path = spec.get("token").and_then(Value::as_str).unwrap_or("token").to_string();
    let token = at("token")
        .or_else(|| raw.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or(TwoStepError::NoToken(token_path))?
        .to_string();
    let refresh_token = at("refresh_token").and_then(Value::as_str).map(str::to_string);
    let strategy = spec.get("token_expiration_strategy").and_then(Value::as_str).unwrap_or("expireIn");
    let expires_at = match at("token_expiration") {
        Some(value) if strategy == "expireAt" => crate::time::parse_instant(value),
        Some(value) => {
            let seconds = value.as_f64().or_else(|| value.as_str().and_then(|s| s.parse().ok()));
            seconds.map(|s| Utc::now() + Duration::milliseconds((s * 1000.0) as i64))
        }
        None => provider
            .entry
            .get("token_expires_in_ms")
            .and_then(Value::as_i64)
            .map(|ms| Utc::now() + Duration::milliseconds(ms)),
    };
    Ok(Tokens { access_token: token, refresh_token, expires_at, token_type: None, raw, metadata: Map::new() })
}

/// A renewal's failure in the terms of every other token request.
impl From<TwoStepError> for TokenError {
    fn from(e: TwoStepError) -> TokenError {
        match e {
            TwoStepError::NoTokenUrl(provider) => TokenError::NoTokenUrl(provider),
            TwoStepError::Missing { provider, missing } => {
                TokenError::MissingConfig { provider, place: "token request".into(), missing }
            }
            TwoStepError::Network { host, reason } => TokenError::Network { host, reason },
            TwoStepError::Refused { status, detail } => TokenError::Status { status, excerpt: detail },
            TwoStepError::NoToken(path) => TokenError::Malformed(format!("the response has no token at `{path}`")),
        }
    }
}
