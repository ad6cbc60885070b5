//! Request extractors: the secret key, and strict JSON bodies and query strings whose errors name
//! the field that is wrong.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{ApiError, Issue};
use crate::app::App;

/// The largest JSON body the API reads.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Proof that the request carried the API secret key.
pub struct SecretKey;

impl FromRequestParts<Arc<App>> for SecretKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if app.is_secret_key(token) {
            Ok(SecretKey)
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unknown_account",
                "The secret key is not valid; send the gateway's API secret key as `Authorization: Bearer <key>`",
            ))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_auth_header",
            "Authentication is required; send `Authorization: Bearer <secret key>`",
        )
    })?;
    value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty()).ok_or_else(
        || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "malformed_auth_header",
                "The Authorization header must have the form `Bearer <secret key>`",
            )
        },
    )
}

/// A JSON body deserialized into `T`, whose types reject unknown keys. Errors name the field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if let Some(content_type) = req.headers().get(header::CONTENT_TYPE) {
            let is_json =
                content_type.to_str().map(|c| c.trim_start().starts_with("application/json")).unwrap_or(false);
            if !is_json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "invalid_content_type",
                    "Content-Type header must be application/json",
                ));
            }
        }
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT).await.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("The request body is larger than the limit of {} MiB", BODY_LIMIT / (1024 * 1024)),
            )
        })?;
        let text = if bytes.is_empty() { &b"{}"[..] } else { &bytes[..] };
        parse_json(text).map(Body)
    }
}

/// Parses JSON into `T`; syntax errors are `invalid_json`, shape errors `invalid_body` with the
/// path of the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => Ok(value),
        Err(e) => {
            let path = path_of(e.path());
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", inner.to_string()));
            }
            Err(shape_error("invalid_body", inner.to_string(), path))
        }
    }
}

fn shape_error(code: &'static str, message: String, mut path: Vec<Value>) -> ApiError {
    let message = message.split(" at line ").next().unwrap_or_default().to_string();
    // serde names a missing or unknown key in the message only; the path should end with it.
    if message.starts_with("missing field `") || message.starts_with("unknown field `") {
        if let Some(name) = message.split('`').nth(1) {
            if path.last().and_then(Value::as_str) != Some(name) {
                path.push(Value::String(name.to_string()));
            }
        }
    }
    let (issue_code, message) = classify(&message);
    let field = path.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(".");
    let full = if field.is_empty() { message.clone() } else { format!("{field}: {message}") };
    ApiError::new(StatusCode::BAD_REQUEST, code, full).with_issue(Issue { code: issue_code, message, path })
}

/// Nango's issue codes for serde's messages.
fn classify(message: &str) -> (&'static str, String) {
    if let Some(rest) = message.strip_prefix("missing field ") {
        ("invalid_type", format!("Required field {rest} is missing"))
    } else if message.starts_with("unknown field") {
        ("unrecognized_keys", message.to_string())
    } else if message.starts_with("invalid type") {
        ("invalid_type", message.to_string())
    } else {
        ("custom", message.to_string())
    }
}

fn path_of(path: &serde_path_to_error::Path) -> Vec<Value> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Value::from(*index)),
            Segment::Map { key } => Some(Value::String(key.clone())),
            Segment::Enum { variant } => Some(Value::String(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// A query string deserialized into `T` (strings only; bracketed keys such as `tags[plan]=pro`
/// become nested maps, repeated keys lists). Unknown parameters are rejected by `T`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let map = parse_query(parts.uri.query().unwrap_or_default());
        serde_path_to_error::deserialize::<_, T>(Value::Object(map)).map(Query).map_err(|e| {
            let path = path_of(e.path());
            shape_error("invalid_query_params", e.into_inner().to_string(), path)
        })
    }
}

/// Parses `a=1&b[c]=2&d=x&d=y` into `{"a":"1","b":{"c":"2"},"d":["x","y"]}`.
pub fn parse_query(query: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = Value::String(value.into_owned());
        let (name, sub) = match key.split_once('[') {
            Some((name, rest)) if rest.ends_with(']') => (name.to_string(), Some(rest[..rest.len() - 1].to_string())),
            _ => (key.into_owned(), None),
        };
        match sub {
            Some(sub) if !sub.is_empty() => {
                let entry = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(nested) = entry {
                    nested.insert(sub, value);
                }
            }
            // `name[]=x` is a list item.
            Some(_) => match out.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(items) => items.push(value),
                other => *other = Value::Array(vec![other.take(), value]),
            },
            None => match out.get_mut(&name) {
                Some(Value::Array(items)) => items.push(value),
                Some(existing) => *existing = Value::Array(vec![existing.take(), value]),
                None => {
                    out.insert(name, value);
                }
            },
        }
    }
    out
}

/// A `"true"`/`"false"` query parameter.
pub fn flag(value: &Option<String>, name: &str) -> Result<bool, ApiError> {
    match value.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::invalid_query(format!("`{name}` must be true or false, not `{other}`"), &[name])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_strings_nest_and_repeat() {
        assert_eq!(
            Value::Object(parse_query("a=1&tags[plan]=pro&tags[x]=y+z&ids=a&ids=b&l[]=q")),
            json!({"a": "1", "tags": {"plan": "pro", "x": "y z"}, "ids": ["a", "b"], "l": ["q"]})
        );
    }

    #[test]
    fn body_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            id: String,
        }
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Outer {
            end_user: Inner,
        }
        let e = parse_json::<Outer>(br#"{"end_user": {}}"#).unwrap_err();
        assert_eq!(e.code, "invalid_body");
        assert_eq!(e.issues()[0].path, vec![json!("end_user"), json!("id")]);
        assert!(e.message.contains("`id`"), "{}", e.message);
        let e = parse_json::<Outer>(br#"{"end_user": {"id": "a", "x": 1}}"#).unwrap_err();
        assert_eq!(e.issues()[0].code, "unrecognized_keys");
        assert_eq!(e.issues()[0].path, vec![json!("end_user"), json!("x")]);
        assert_eq!(parse_json::<Outer>(b"{").unwrap_err().code, "invalid_json");
    }
}
