//! The typed form of `nango.yaml`, read after the JSON Schema has accepted the document.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Default, Deserialize)]
pub struct NangoYaml {
    #[serde(default)]
    pub catalogs: Vec<String>,
    #[serde(default)]
    pub integrations: IndexMap<String, Option<IntegrationYaml>>,
    #[serde(default)]
    pub models: IndexMap<String, Option<Map<String, Value>>>,
    #[serde(default)]
    pub logs: Option<LogsYaml>,
    #[serde(default)]
    pub connect_ui: ConnectUi,
    #[serde(default)]
    pub webhooks: Option<WebhooksYaml>,
    #[serde(default)]
    pub proxy: Option<ProxyYaml>,
    /// Per provider name, limits that replace the catalog's `rate_limit`.
    #[serde(default)]
    pub rate_limits: IndexMap<String, crate::catalog::RateLimit>,
}

/// Latchkey's `proxy:` section.
#[derive(Debug, Default, Deserialize)]
pub struct ProxyYaml {
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
}

/// Latchkey's `logs:` section.
#[derive(Debug, Default, Deserialize)]
pub struct LogsYaml {
    /// How long log entries are kept, such as `7d`.
    pub retention: Option<String>,
}

/// The look of Latchkey's Connect UI (`connect_ui:` in nango.yaml).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConnectUi {
    pub logo_url: Option<String>,
    pub default_theme: Option<String>,
    pub show_watermark: Option<bool>,
    #[serde(default)]
    pub theme: ConnectUiThemes,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConnectUiThemes {
    #[serde(default)]
    pub light: ConnectUiColours,
    #[serde(default)]
    pub dark: ConnectUiColours,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ConnectUiColours {
    pub primary: Option<String>,
    pub background: Option<String>,
    pub text: Option<String>,
}

/// Where and when the gateway POSTs webhooks to you, with Nango's setting names.
#[derive(Debug, Default, Deserialize)]
pub struct WebhooksYaml {
    pub primary_url: Option<String>,
    pub secondary_url: Option<String>,
    /// The key of the `X-Nango-Hmac-Sha256` signature; a `${env:…}` or `${file:…}` reference.
    pub signing_secret: Option<String>,
    pub on_auth_creation: Option<bool>,
    pub on_auth_refresh_error: Option<bool>,
    pub on_sync_completion_always: Option<bool>,
    pub on_sync_error: Option<bool>,
    pub on_async_action_completion: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct IntegrationYaml {
    pub provider: Option<String>,
    pub display_name: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: Option<Scopes>,
    pub webhook_secret: Option<String>,
    pub app_id: Option<String>,
    pub app_link: Option<String>,
    pub private_key: Option<String>,
    #[serde(default)]
    pub integration_config: IndexMap<String, String>,
    #[serde(default)]
    pub forward_webhooks: Option<bool>,
    #[serde(default)]
    pub allow_base_url_override: bool,
    pub refresh_margin_seconds: Option<u64>,
}

impl IntegrationYaml {
    /// Whether this entry declares the integration itself (config as code), rather than only
    /// attaching functions to an integration created through the API, as Nango's files do.
    pub fn declares_integration(&self) -> bool {
        self.provider.is_some()
            || self.client_id.is_some()
            || self.client_secret.is_some()
            || self.app_id.is_some()
            || self.private_key.is_some()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scopes {
    List(Vec<String>),
    /// Nango's comma-separated form.
    Joined(String),
}

impl Scopes {
    pub fn into_list(self) -> Vec<String> {
        match self {
            Scopes::List(list) => list,
            Scopes::Joined(text) => split_scopes(&text),
        }
    }
}

/// Splits Nango's comma-separated scope list, dropping blanks.
pub fn split_scopes(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}
