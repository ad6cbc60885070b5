//! An integration: your configuration of a provider, under a unique key (Nango's
//! `providerConfigKey`). It is declared in `nango.yaml` or created through the API; both kinds
//! look the same to the rest of the gateway.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::catalog::Provider;
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Declared in a config file, read-only through the API.
    File(PathBuf),
    /// Created through the API, stored in the database.
    Api,
}

/// The credentials of the integration's own app at the provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppCredentials {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    pub webhook_secret: Option<Secret>,
    pub app_id: Option<String>,
    pub app_link: Option<String>,
    pub private_key: Option<Secret>,
}

impl AppCredentials {
    pub fn is_empty(&self) -> bool {
        *self == AppCredentials::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub unique_key: String,
    pub provider: String,
    pub display_name: Option<String>,
    pub credentials: AppCredentials,
    pub integration_config: Map<String, Value>,
    /// Free-form settings kept for Nango compatibility (`custom` in its API).
    pub custom: Map<String, Value>,
    pub forward_webhooks: bool,
    /// Whether callers may send `Base-Url-Override` to another host than the provider's.
    pub allow_base_url_override: bool,
    pub refresh_margin_seconds: Option<u64>,
    pub origin: Origin,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `GET /integrations/:key?include=` asks for beyond the public fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Include {
    pub webhook: bool,
    pub credentials: bool,
}

impl Integration {
    /// Nango's `ApiPublicIntegration`.
    pub fn to_api(&self, provider: Option<&Provider>, server_url: &str, include: Include) -> Value {
        let display_name = self
            .display_name
            .clone()
            .or_else(|| provider.map(|p| p.display_name.clone()))
            .unwrap_or_else(|| self.provider.clone());
        let logo = format!("{}/images/template-logos/{}.svg", server_url.trim_end_matches('/'), self.provider);
        let mut out = json!({
            "unique_key": self.unique_key,
            "provider": self.provider,
            "display_name": display_name,
            "logo": logo,
            "forward_webhooks": self.forward_webhooks,
            "created_at": crate::time::iso(self.created_at),
            "updated_at": crate::time::iso(self.updated_at),
        });
        if let Some(p) = provider {
            if let Some(label) = p.credentials.get("apiKey").and_then(|f| f.title.clone()) {
                out["credentials_label"] = json!({ "apiKey": label });
            }
        }
        if include.webhook {
            out["webhook_url"] =
                Value::String(format!("{}/webhook/{}", server_url.trim_end_matches('/'), self.unique_key));
        }
        if include.credentials {
            out["credentials"] = self.credentials_to_api(provider);
        }
        out
    }

    fn credentials_to_api(&self, provider: Option<&Provider>) -> Value {
        let c = &self.credentials;
        if c.is_empty() {
            return Value::Null;
        }
        let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_string());
        let mode = provider.and_then(|p| p.auth_mode).map(|m| m.as_str()).unwrap_or("OAUTH2");
        match mode {
            "APP" => {
                json!({ "type": "APP", "app_id": c.app_id, "private_key": secret(&c.private_key), "app_link": c.app_link })
            }
            "CUSTOM" => json!({
                "type": "CUSTOM", "client_id": c.client_id, "client_secret": secret(&c.client_secret),
                "app_id": c.app_id, "app_link": c.app_link, "private_key": secret(&c.private_key),
            }),
            other => json!({
                "type": if matches!(other, "OAUTH1" | "TBA") { other } else { "OAUTH2" },
                "client_id": c.client_id,
                "client_secret": secret(&c.client_secret),
                "scopes": c.scopes.join(","),
                "webhook_secret": secret(&c.webhook_secret),
            }),
        }
    }
}
