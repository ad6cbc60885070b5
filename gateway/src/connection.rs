//! A connection: one end user's authorization for one integration, keyed by
//! `(provider_config_key, connection_id)`, with its credentials, config, metadata and tags.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::time::iso;

/// Credentials by auth mode, in the shape Nango's API returns them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Credentials {
    #[serde(rename = "OAUTH2")]
    OAuth2 {
        access_token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::iso_opt")]
        expires_at: Option<DateTime<Utc>>,
        #[serde(default)]
        raw: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config_override: Option<Value>,
    },
    #[serde(rename = "OAUTH2_CC")]
    OAuth2Cc {
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::iso_opt")]
        expires_at: Option<DateTime<Utc>>,
        client_id: String,
        client_secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_certificate: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_private_key: Option<String>,
        #[serde(default)]
        raw: Value,
    },
    #[serde(rename = "OAUTH1")]
    OAuth1 {
        oauth_token: String,
        oauth_token_secret: String,
        #[serde(default)]
        raw: Value,
    },
    #[serde(rename = "API_KEY")]
    ApiKey {
        #[serde(rename = "apiKey")]
        api_key: String,
    },
    #[serde(rename = "BASIC")]
    Basic {
        username: String,
        #[serde(default)]
        password: String,
    },
    #[serde(rename = "TBA")]
    Tba {
        token_id: String,
        token_secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config_override: Option<Value>,
    },
    /// A GitHub App installation token, minted with the app's key.
    #[serde(rename = "APP")]
    App {
        access_token: String,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::iso_opt")]
        expires_at: Option<DateTime<Utc>>,
        #[serde(default)]
        raw: Value,
    },
    #[serde(rename = "TWO_STEP")]
    TwoStep {
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::iso_opt")]
        expires_at: Option<DateTime<Utc>>,
        #[serde(default)]
        raw: Value,
        /// The fields the end user entered (user name, password, key…), which templates read
        /// as `${credentials.<name>}`.
        #[serde(flatten)]
        fields: Map<String, Value>,
    },
    /// A token signed with the end user's key, signed again as it nears expiry.
    #[serde(rename = "JWT")]
    Jwt {
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::iso_opt")]
        expires_at: Option<DateTime<Utc>>,
        /// The fields the end user entered (the key, its id…), which the token templates read
        /// as `${credentials.<name>}`.
        #[serde(flatten)]
        fields: Map<String, Value>,
    },
    #[serde(rename = "NONE")]
    None,
}

impl Credentials {
    /// The auth mode these credentials belong to, as the catalog names it.
    pub fn mode(&self) -> &'static str {
        match self {
            Credentials::OAuth2 { .. } => "OAUTH2",
            Credentials::OAuth2Cc { .. } => "OAUTH2_CC",
            Credentials::OAuth1 { .. } => "OAUTH1",
            Credentials::ApiKey { .. } => "API_KEY",
            Credentials::Basic { .. } => "BASIC",
            Credentials::Tba { .. } => "TBA",
            Credentials::App { .. } => "APP",
            Credentials::TwoStep { .. } => "TWO_STEP",
            Credentials::Jwt { .. } => "JWT",
            Credentials::None => "NONE",
        }
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Credentials::OAuth2 { expires_at, .. }
            | Credentials::OAuth2Cc { expires_at, .. }
            | Credentials::App { expires_at, .. }
            | Credentials::TwoStep { expires_at, .. }
            | Credentials::Jwt { expires_at, .. } => *expires_at,
            _ => None,
        }
    }

    /// As JSON in Nango's shape. `NONE` is an empty object there.
    pub fn to_json(&self) -> Value {
        match self {
            Credentials::None => json!({}),
            other => serde_json::to_value(other).unwrap_or_else(|_| json!({})),
        }
    }

    /// Every secret string in these credentials, for redaction.
    pub fn secret_values(&self) -> Vec<&str> {
        let values: Vec<Option<&String>> = match self {
            Credentials::OAuth2 { access_token, refresh_token, .. } => vec![Some(access_token), refresh_token.as_ref()],
            Credentials::OAuth2Cc { token, client_secret, client_private_key, .. } => {
                vec![Some(token), Some(client_secret), client_private_key.as_ref()]
            }
            Credentials::OAuth1 { oauth_token, oauth_token_secret, .. } => {
                vec![Some(oauth_token), Some(oauth_token_secret)]
            }
            Credentials::ApiKey { api_key } => vec![Some(api_key)],
            Credentials::Basic { password, .. } => vec![Some(password)],
            Credentials::Tba { token_id, token_secret, .. } => vec![Some(token_id), Some(token_secret)],
            Credentials::App { access_token, .. } => vec![Some(access_token)],
            Credentials::TwoStep { token, refresh_token, fields, .. } => {
                let entered = fields.values().filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                });
                [Some(token), refresh_token.as_ref()].into_iter().chain(entered.map(Some)).collect()
            }
            // Keys may be nested (`privateKey.secret`).
            Credentials::Jwt { token, fields, .. } => {
                let mut strings = vec![token];
                fields.values().for_each(|v| strings_in(v, &mut strings));
                strings.into_iter().map(Some).collect()
            }
            Credentials::None => Vec::new(),
        };
        values.into_iter().flatten().map(String::as_str).filter(|s| !s.is_empty()).collect()
    }
}

/// Every string in `value`, at any depth.
pub(crate) fn strings_in<'v>(value: &'v Value, out: &mut Vec<&'v String>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings_in(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings_in(v, out)),
        _ => {}
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndUser {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub tags: Option<Map<String, Value>>,
    #[serde(default)]
    pub organization: Option<Organization>,
}

impl EndUser {
    /// The tags Nango derives from an end user, which explicit tags override.
    pub fn derived_tags(&self) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::new();
        tags.insert("end_user_id".to_string(), self.id.clone());
        if let Some(email) = &self.email {
            tags.insert("end_user_email".to_string(), email.clone());
        }
        if let Some(name) = &self.display_name {
            tags.insert("end_user_display_name".to_string(), name.clone());
        }
        if let Some(org) = &self.organization {
            tags.insert("organization_id".to_string(), org.id.clone());
        }
        tags
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// The internal numeric id.
    pub id: i64,
    pub connection_id: String,
    pub provider_config_key: String,
    pub provider: String,
    pub credentials: Credentials,
    pub connection_config: Map<String, Value>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: BTreeMap<String, String>,
    pub end_user: Option<EndUser>,
    pub webhook_url_override: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_fetched_at: Option<DateTime<Utc>>,
}

impl Connection {
    /// Nango's list item (`ApiPublicConnection`).
    pub fn to_api_summary(&self) -> Value {
        json!({
            "id": self.id,
            "connection_id": self.connection_id,
            "provider_config_key": self.provider_config_key,
            "provider": self.provider,
            "created": iso(self.created_at),
            "metadata": self.metadata,
            "tags": self.tags,
            "errors": [],
            "end_user": self.end_user_api(),
        })
    }

    /// Nango's single connection (`ApiPublicConnectionFull`), credentials included. The refresh
    /// token is removed unless asked for.
    pub fn to_api_full(&self, with_refresh_token: bool) -> Value {
        let mut credentials = self.credentials.to_json();
        let mut connection_config = Value::Object(self.connection_config.clone());
        if !with_refresh_token {
            strip_refresh_tokens(&mut credentials);
            strip_refresh_tokens(&mut connection_config);
        }
        json!({
            "id": self.id,
            "connection_id": self.connection_id,
            "provider_config_key": self.provider_config_key,
            "provider": self.provider,
            "errors": [],
            "end_user": self.end_user_api(),
            "tags": self.tags,
            "metadata": self.metadata,
            "connection_config": connection_config,
            "webhook_url_override": self.webhook_url_override,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "last_fetched_at": self.last_fetched_at.map(iso),
            "credentials": credentials,
        })
    }

    fn end_user_api(&self) -> Value {
        match &self.end_user {
            None => Value::Null,
            Some(u) => json!({
                "id": u.id,
                "email": u.email,
                "display_name": u.display_name,
                "tags": u.tags,
                "organization": u.organization.as_ref().map(|o| json!({ "id": o.id, "display_name": o.display_name })),
            }),
        }
    }
}

/// Removes, at any depth, every key whose letters spell `refreshtoken` (as Nango does, which
/// catches `refresh_token`, `refreshToken` and `RefreshToken` in raw token responses too).
fn strip_refresh_tokens(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| {
                let letters: String = k.chars().filter(char::is_ascii_alphabetic).collect();
                !letters.eq_ignore_ascii_case("refreshtoken")
            });
            map.values_mut().for_each(strip_refresh_tokens);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_refresh_tokens),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_in_nangos_shape() {
        let c: Credentials = serde_json::from_value(json!({"type": "API_KEY", "apiKey": "k"})).unwrap();
        assert_eq!(c, Credentials::ApiKey { api_key: "k".into() });
        assert_eq!(c.to_json(), json!({"type": "API_KEY", "apiKey": "k"}));
        let o: Credentials = serde_json::from_value(json!({
            "type": "OAUTH2", "access_token": "a", "refresh_token": "r", "expires_at": "2030-01-01T00:00:00.000Z"
        }))
        .unwrap();
        assert_eq!(o.to_json()["expires_at"], "2030-01-01T00:00:00.000Z");
        assert_eq!(Credentials::None.to_json(), json!({}));
        let two_step = json!({"type": "TWO_STEP", "token": "t", "raw": {"a": 1}, "email": "e@x.co", "password": "p"});
        let c: Credentials = serde_json::from_value(two_step.clone()).unwrap();
        match &c {
            Credentials::TwoStep { token, fields, .. } => {
                assert_eq!(token, "t");
                assert_eq!(Value::Object(fields.clone()), json!({"email": "e@x.co", "password": "p"}));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.to_json(), two_step);
        assert!(c.secret_values().contains(&"p"));
    }

    #[test]
    fn refresh_tokens_are_stripped_everywhere() {
        let mut v = json!({"refresh_token": "x", "raw": {"refreshToken": "y", "RefreshToken": "z", "a": [{"refresh-token": 1}], "keep": 1}});
        strip_refresh_tokens(&mut v);
        assert_eq!(v, json!({"raw": {"a": [{}], "keep": 1}}));
    }
}
