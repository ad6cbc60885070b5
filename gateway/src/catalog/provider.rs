//! The provider model: the parts of a catalog entry that Latchkey acts on, typed. The resolved
//! entry itself is kept as JSON too, because the API serves it as written.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthMode {
    #[serde(rename = "OAUTH2")]
    OAuth2,
    #[serde(rename = "OAUTH1")]
    OAuth1,
    #[serde(rename = "OAUTH2_CC")]
    OAuth2Cc,
    ApiKey,
    Basic,
    App,
    Custom,
    Jwt,
    TwoStep,
    Tba,
    Bill,
    Signature,
    #[serde(rename = "AWS_SIGV4")]
    AwsSigV4,
    None,
    #[serde(rename = "MCP_OAUTH2")]
    McpOAuth2,
    #[serde(rename = "MCP_OAUTH2_GENERIC")]
    McpOAuth2Generic,
    InstallPlugin,
    AppStore,
    Tableau,
}

impl AuthMode {
    /// The name as the catalog and the API write it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::OAuth2 => "OAUTH2",
            AuthMode::OAuth1 => "OAUTH1",
            AuthMode::OAuth2Cc => "OAUTH2_CC",
            AuthMode::ApiKey => "API_KEY",
            AuthMode::Basic => "BASIC",
            AuthMode::App => "APP",
            AuthMode::Custom => "CUSTOM",
            AuthMode::Jwt => "JWT",
            AuthMode::TwoStep => "TWO_STEP",
            AuthMode::Tba => "TBA",
            AuthMode::Bill => "BILL",
            AuthMode::Signature => "SIGNATURE",
            AuthMode::AwsSigV4 => "AWS_SIGV4",
            AuthMode::None => "NONE",
            AuthMode::McpOAuth2 => "MCP_OAUTH2",
            AuthMode::McpOAuth2Generic => "MCP_OAUTH2_GENERIC",
            AuthMode::InstallPlugin => "INSTALL_PLUGIN",
            AuthMode::AppStore => "APP_STORE",
            AuthMode::Tableau => "TABLEAU",
        }
    }
}

impl std::fmt::Display for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field of a form the Connect UI renders (`connection_config`, `credentials`, …).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Field {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub automated: bool,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub default_value: Option<String>,
}

impl Field {
    /// Whether `text` has the field's form: it matches the `pattern`, when there is one that
    /// compiles (`latchkey check` reports those that do not).
    pub fn accepts(&self, text: &str) -> bool {
        let pattern = self.pattern.as_deref().and_then(|p| regex::Regex::new(p).ok());
        pattern.is_none_or(|re| re.is_match(text))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenUrl {
    One(String),
    /// Per auth mode (`OAUTH2`, `APP`), for providers that mix two flows.
    PerMode(IndexMap<String, String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Retry {
    #[serde(default)]
    pub at: Vec<String>,
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub remaining: Option<String>,
    #[serde(default)]
    pub error_code: Vec<String>,
}

/// Latchkey's `rate_limit`: limits the proxy applies before a request leaves, for each
/// connection and for the provider as a whole. Also settable per provider in `nango.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default)]
    pub per_connection: Option<Limit>,
    #[serde(default)]
    pub per_provider: Option<Limit>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Requests allowed per `interval`.
    #[serde(default)]
    pub requests: Option<u32>,
    /// Such as `1s` or `1m`; one second when not given.
    #[serde(default)]
    pub interval: Option<String>,
    /// Requests in flight at once.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// How long a request over the limit may wait for its turn before it is refused with 429.
    #[serde(default)]
    pub max_wait: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Verification {
    #[serde(default = "get")]
    pub method: String,
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub base_url_override: Option<String>,
}

fn get() -> String {
    "GET".to_string()
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProxySpec {
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub query: IndexMap<String, String>,
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default)]
    pub decompress: bool,
    #[serde(default)]
    pub forward_headers_on_redirect: bool,
    #[serde(default)]
    pub paginate: Option<Value>,
    #[serde(default)]
    pub verification: Option<Verification>,
    #[serde(default)]
    pub connection_config: Option<Map<String, Value>>,
}

/// A provider after alias resolution.
#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    #[serde(skip)]
    pub name: String,
    pub display_name: String,
    pub docs: String,
    #[serde(default)]
    pub categories: Vec<String>,
    pub auth_mode: Option<AuthMode>,
    #[serde(default)]
    pub authorization_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<TokenUrl>,
    #[serde(default)]
    pub refresh_url: Option<String>,
    #[serde(default)]
    pub authorization_params: Map<String, Value>,
    #[serde(default)]
    pub token_params: Map<String, Value>,
    #[serde(default)]
    pub refresh_params: Option<Map<String, Value>>,
    #[serde(default)]
    pub scope_separator: Option<String>,
    #[serde(default)]
    pub default_scopes: Vec<String>,
    #[serde(default)]
    pub disable_pkce: bool,
    #[serde(default)]
    pub authorization_method: Option<String>,
    #[serde(default)]
    pub token_request_auth_method: Option<String>,
    #[serde(default)]
    pub body_format: Option<String>,
    #[serde(default)]
    pub token_expiration_buffer: Option<f64>,
    #[serde(default)]
    pub refresh_margin_seconds: Option<u64>,
    #[serde(default)]
    pub token_response_metadata: Vec<String>,
    /// More paths copied into `connection_config` from a refresh's response only.
    #[serde(default)]
    pub refresh_token_response_metadata: Vec<String>,
    #[serde(default)]
    pub redirect_uri_metadata: Vec<String>,
    #[serde(default)]
    pub connection_configuration: Vec<String>,
    #[serde(default)]
    pub connection_config: IndexMap<String, Field>,
    #[serde(default)]
    pub credentials: IndexMap<String, Field>,
    #[serde(default)]
    pub proxy: Option<ProxySpec>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The resolved entry as JSON, `alias` removed, in the order it was written.
    #[serde(skip)]
    pub entry: Value,
    /// Where the entry was defined (for messages).
    #[serde(skip)]
    pub origin: std::path::PathBuf,
}

impl Provider {
    pub fn base_url(&self) -> Option<&str> {
        self.proxy.as_ref().and_then(|p| p.base_url.as_deref())
    }

    /// The entry as the API serves it: the resolved entry plus `name` and `logo_url`.
    pub fn to_api(&self, server_url: &str) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), Value::String(self.name.clone()));
        if let Value::Object(entry) = &self.entry {
            for (k, v) in entry {
                out.insert(k.clone(), v.clone());
            }
        }
        out.insert("logo_url".into(), Value::String(self.logo_url(server_url)));
        Value::Object(out)
    }

    pub fn logo_url(&self, server_url: &str) -> String {
        format!("{}/images/template-logos/{}.svg", server_url.trim_end_matches('/'), self.name)
    }

    /// Connection-config keys that the provider itself fills in (from the token response, the
    /// callback, a post-connection step, or fields marked `automated`).
    pub fn automated_config_keys(&self) -> impl Iterator<Item = &str> {
        let metadata = self
            .token_response_metadata
            .iter()
            .chain(&self.refresh_token_response_metadata)
            .chain(&self.redirect_uri_metadata)
            .chain(&self.connection_configuration)
            .map(String::as_str);
        let automated = self.connection_config.iter().filter(|(_, f)| f.automated).map(|(k, _)| k.as_str());
        metadata.chain(automated)
    }
}
