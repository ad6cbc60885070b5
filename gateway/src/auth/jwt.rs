//! JWT: the connection's own key signs a short-lived token locally, which the proxy then sends
//! (as a bearer token unless a header template places `${accessToken}`). No provider call is
//! made; renewing the token is signing again ([`super::refresh`]).
//!
//! The entry declares everything: `signature.protocol` (RSA, HMAC or EC) and, for HMAC,
//! `signature.hmac_secret_encoding` (hex unless `base64` or `utf8`); `token.signing_key`, the
//! `token.header` (whose `alg` picks the algorithm) and `token.payload` templates, rendered with
//! the end user's fields (`${credentials.*}`) and the connection config; `token.expires_in_ms`
//! for `exp`. Header and payload keys whose template cannot be filled are left out, as in Nango.

use std::collections::{BTreeSet, HashMap};

use axum::http::StatusCode;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::catalog::template::{self, placeholders, Layers, Scope};
use crate::catalog::Provider;
use crate::connection::{strings_in, Credentials};

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("provider `{provider}` has no usable `token` and `signature` sections: {reason}")]
    BadEntry { provider: String, reason: String },
    #[error("provider `{provider}` signs with {protocol}, whose algorithms are {expected}; its token.header.alg `{alg}` is not one of them")]
    UnsupportedAlg { provider: String, protocol: String, alg: String, expected: &'static str },
    #[error("`{field}` is required to sign the token")]
    MissingKey { field: String },
    #[error("`{field}` is not {expected}")]
    MalformedKey { field: String, expected: &'static str },
}

impl JwtError {
    /// The end user's field that is wrong, when the end user can fix it (else the entry is wrong).
    pub fn field(&self) -> Option<&str> {
        match self {
            JwtError::MissingKey { field } | JwtError::MalformedKey { field, .. } => Some(field),
            JwtError::BadEntry { .. } | JwtError::UnsupportedAlg { .. } => None,
        }
    }

    /// As an API answer: 400 naming the field (under `parent` in the body) when the end user
    /// can fix it, else the entry's fault.
    pub fn into_api(self, provider: &str, parent: &[&str]) -> ApiError {
        match self.field() {
            Some(field) => {
                let path: Vec<&str> = parent.iter().copied().chain(field.split('.')).collect();
                ApiError::invalid_body(self.to_string(), &path)
            }
            None => {
                tracing::warn!(provider, "cannot sign a JWT: {self}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "invalid_provider_template", self.to_string())
            }
        }
    }
}

#[derive(Deserialize)]
struct Signature {
    protocol: String,
    #[serde(default)]
    hmac_secret_encoding: Option<String>,
}

#[derive(Deserialize)]
struct TokenSpec {
    signing_key: String,
    #[serde(default)]
    header: Map<String, Value>,
    #[serde(default)]
    payload: Map<String, Value>,
}

fn section<T: for<'de> Deserialize<'de>>(provider: &Provider, key: &str) -> Result<T, JwtError> {
    let value = provider.entry.get(key).cloned().unwrap_or(Value::Null);
    serde_json::from_value(value)
        .map_err(|e| JwtError::BadEntry { provider: provider.name.clone(), reason: format!("`{key}`: {e}") })
}

/// How long the provider's tokens live (`token.expires_in_ms`), when it says.
pub fn lifetime(provider: &Provider) -> Option<Duration> {
    let ms = provider.entry.get("token")?.get("expires_in_ms")?.as_f64()?;
    (ms.is_finite() && ms > 0.0).then(|| Duration::milliseconds(ms as i64))
}

/// What is wrong with a JWT entry's `signature` and `token` sections, for `latchkey check`.
pub fn entry_problem(provider: &Provider) -> Option<JwtError> {
    let check = || -> Result<(), JwtError> {
        let signature: Signature = section(provider, "signature")?;
        let spec: TokenSpec = section(provider, "token")?;
        algorithm(provider, &signature.protocol, &spec.header).map(|_| ())
    };
    check().err()
}

/// A signed token.
pub struct Signed {
    pub token: String,
    pub expires_at: Option<DateTime<Utc>>,
}

// Not derived: the token is a credential.
impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

impl Signed {
    /// The credentials to store: the token with the fields it was signed from.
    pub fn into_credentials(self, fields: Map<String, Value>) -> Credentials {
        Credentials::Jwt { token: self.token, expires_at: self.expires_at, fields }
    }
}

/// Signs a token for the end user's `fields`.
pub fn sign(
    provider: &Provider,
    fields: &Map<String, Value>,
    connection_config: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Signed, JwtError> {
    let signature: Signature = section(provider, "signature")?;
    let spec: TokenSpec = section(provider, "token")?;
    let config = Value::Object(connection_config.clone());
    let entered = Value::Object(fields.clone());
    let named = json!({ "connectionConfig": config, "connection_config": config, "credentials": entered });
    let layers = Layers(vec![&named, &entered]);
    let scope = Scope::new(&layers);

    let mut header = render_map(&spec.header, &scope);
    header.entry("typ").or_insert_with(|| json!("JWT"));
    let mut payload = render_map(&spec.payload, &scope);
    payload.insert("iat".into(), json!(now.timestamp()));
    let expires_at = lifetime(provider).map(|lifetime| now + lifetime);
    if let Some(at) = expires_at {
        payload.insert("exp".into(), json!(at.timestamp()));
    }

    let alg = algorithm(provider, &signature.protocol, &header)?;
    let field = key_field(&spec.signing_key);
    let text = template::render(&spec.signing_key, &scope)
        .complete()
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| JwtError::MissingKey { field: field.clone() })?;
    let key =
        signing_key(&signature, &text).map_err(|expected| JwtError::MalformedKey { field: field.clone(), expected })?;

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message =
        format!("{}.{}", b64.encode(Value::Object(header).to_string()), b64.encode(Value::Object(payload).to_string()));
    // ring refuses a key of the wrong kind or curve here (a P-384 key for ES256).
    let signed = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg)
        .map_err(|_| JwtError::MalformedKey { field, expected: expected_key(&signature.protocol) })?;
    Ok(Signed { token: format!("{message}.{signed}"), expires_at })
}

/// Renders every value of a header or payload template; keys that cannot be filled are left
/// out, and an array keeps its filled items, each split on commas.
fn render_map(template: &Map<String, Value>, scope: &Scope<'_>) -> Map<String, Value> {
    template.iter().filter_map(|(k, v)| render_value(v, scope).map(|v| (k.clone(), v))).collect()
}

fn render_value(value: &Value, scope: &Scope<'_>) -> Option<Value> {
    match value {
        Value::String(text) => template::render(text, scope).complete().ok().map(Value::String),
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|item| match render_value(item, scope)? {
                    Value::String(s) => Some(s.split(',').map(|p| json!(p.trim())).collect::<Vec<_>>()),
                    other => Some(vec![other]),
                })
                .flatten()
                .collect(),
        )),
        Value::Object(map) => Some(Value::Object(render_map(map, scope))),
        other => Some(other.clone()),
    }
}

/// The algorithm `header.alg` names, which must belong to the entry's protocol.
fn algorithm(provider: &Provider, protocol: &str, header: &Map<String, Value>) -> Result<Algorithm, JwtError> {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
    let expected = match protocol {
        "HMAC" => "HS256, HS384, HS512",
        "RSA" => "RS256, RS384, RS512, PS256, PS384, PS512",
        "EC" => "ES256, ES384",
        other => {
            return Err(JwtError::BadEntry {
                provider: provider.name.clone(),
                reason: format!("signature.protocol `{other}` is not RSA, HMAC or EC"),
            })
        }
    };
    match alg.parse::<Algorithm>() {
        Ok(parsed) if expected.split(", ").any(|name| name == alg) => Ok(parsed),
        _ => Err(JwtError::UnsupportedAlg {
            provider: provider.name.clone(),
            protocol: protocol.to_string(),
            alg: alg.to_string(),
            expected,
        }),
    }
}

/// The field the signing key comes from, as the end user names it (`privateKey.secret`).
fn key_field(signing_key: &str) -> String {
    let names: Vec<String> = placeholders(signing_key)
        .into_iter()
        .map(|name| name.strip_prefix("credentials.").map(str::to_string).unwrap_or(name))
        .collect();
    if names.is_empty() {
        "token.signing_key".to_string()
    } else {
        names.join(", ")
    }
}

fn expected_key(protocol: &str) -> &'static str {
    match protocol {
        "RSA" => "an RSA private key in PEM",
        "EC" => "an EC private key in PEM (PKCS #8, on the curve the algorithm names)",
        _ => "a usable HMAC secret",
    }
}

/// The signing key; on failure, what it should have been.
fn signing_key(signature: &Signature, text: &str) -> Result<EncodingKey, &'static str> {
    let text = text.trim();
    match signature.protocol.as_str() {
        "HMAC" => {
            let bytes = match signature.hmac_secret_encoding.as_deref().unwrap_or("hex") {
                "base64" => base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| "a base64 string")?,
                "utf8" => text.as_bytes().to_vec(),
                _ => hex_decode(text).ok_or("a hex string")?,
            };
            Ok(EncodingKey::from_secret(&bytes))
        }
        "RSA" => pem(text).and_then(|p| EncodingKey::from_rsa_pem(&p).ok()).ok_or(expected_key("RSA")),
        _ => pem(text).and_then(|p| EncodingKey::from_ec_pem(&p).ok()).ok_or(expected_key("EC")),
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.is_ascii() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// A PEM document as the parsers want it, from a key as people paste it: with its line breaks
/// lost or written as `\n`, or base64 of the whole PEM (as Nango stores GitHub App keys).
pub(crate) fn pem(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().replace("\\n", "\n");
    let text = if text.starts_with("-----BEGIN ") {
        text
    } else {
        let compact: String = text.split_whitespace().collect();
        let decoded = base64::engine::general_purpose::STANDARD.decode(compact).ok()?;
        String::from_utf8(decoded).ok()?.trim().to_string()
    };
    let after_begin = text.strip_prefix("-----BEGIN ")?;
    let (label, rest) = after_begin.split_once("-----")?;
    let body = rest.split_once(&format!("-----END {label}-----"))?.0;
    let body: String = body.split_whitespace().collect();
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).ok()?);
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    Some(out.into_bytes())
}

/// The end user's fields as stored: a Ghost-style `id:secret` string given for a field whose
/// templates read its `id` and `secret` is split into those two, the shape Nango stores.
pub fn split_pairs(provider: &Provider, mut fields: Map<String, Value>) -> Map<String, Value> {
    let read = read_subkeys(provider);
    for (name, value) in fields.iter_mut() {
        let Value::String(text) = value else { continue };
        let wants_pair = read.get(name).is_some_and(|subs| subs.contains("id") && subs.contains("secret"));
        if let (true, Some((id, secret))) = (wants_pair, text.split_once(':')) {
            *value = json!({ "id": id.trim(), "secret": secret.trim() });
        }
    }
    fields
}

/// For each credential field, the sub-keys the token templates read (`privateKey` → `id`, `secret`).
fn read_subkeys(provider: &Provider) -> HashMap<String, BTreeSet<String>> {
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut texts = Vec::new();
    strings_in(provider.entry.get("token").unwrap_or(&Value::Null), &mut texts);
    for text in texts {
        for name in placeholders(text) {
            let name = name.strip_prefix("credentials.").unwrap_or(&name);
            if let Some((field, sub)) = name.split_once('.') {
                out.entry(field.to_string()).or_default().insert(sub.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
