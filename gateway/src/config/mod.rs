//! Configuration as code: `nango.yaml` and the provider catalog, parsed, validated and compiled
//! into one immutable [`Config`] snapshot. [`ConfigHandle`] holds the current snapshot and
//! swaps in a new one on reload; a snapshot that fails validation never replaces a good one.

mod model;
mod reference;
mod reload;
pub mod yaml;

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use indexmap::IndexMap;
use serde_json::Value;

pub use model::{split_scopes, ConnectUi, ConnectUiColours};
pub use reload::{ConfigHandle, ReloadStatus};

use crate::catalog::{self, Catalog};
use crate::integration::{AppCredentials, Integration, Origin};
use crate::problem::{escape_pointer, Problem, Problems};
use crate::schema::Schema;
use crate::secret::Secret;
use model::{IntegrationYaml, NangoYaml};

static CONFIG_SCHEMA: LazyLock<Schema> = LazyLock::new(|| Schema::compile(include_str!("nango.schema.json")));

/// How long log entries are kept when `logs.retention` is not set.
pub const DEFAULT_LOG_RETENTION: Duration = Duration::from_secs(7 * 86_400);

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub config_path: PathBuf,
    /// Whether the path was given explicitly; a missing default `nango.yaml` means an empty
    /// configuration, a missing explicit one is an error.
    pub config_required: bool,
    /// The catalog directory; `None` means `providers/` beside the config file when it exists,
    /// else the catalog built into the binary.
    pub catalog_dir: Option<PathBuf>,
}

/// One immutable, validated view of the configuration.
#[derive(Debug)]
pub struct Config {
    pub version: u64,
    pub loaded_at: DateTime<Utc>,
    pub path: PathBuf,
    pub catalog: Catalog,
    /// Integrations declared in the config file.
    pub integrations: IndexMap<String, Arc<Integration>>,
    /// Models declared in the config file, as written.
    pub models: IndexMap<String, Value>,
    /// The syncs and actions, compiled.
    pub functions: Arc<crate::functions::Functions>,
    /// How long the log store keeps entries (`logs.retention`).
    pub log_retention: Duration,
    /// Where webhooks go and how they are signed.
    pub webhooks: crate::webhooks::Settings,
    /// How long the proxy waits to connect to an upstream (`proxy.connect_timeout`).
    pub connect_timeout: Duration,
    /// How long an upstream may stay silent, before its first byte and between bytes, and how
    /// long a write to it may stall (`proxy.read_timeout`).
    pub read_timeout: Duration,
    /// Per provider name, the proxy's rate limits that replace the catalog's (`rate_limits`).
    pub rate_limits: IndexMap<String, crate::catalog::RateLimit>,
    /// Every file this snapshot was read from, to watch for changes.
    pub files: Vec<PathBuf>,
    /// The look of the Connect UI.
    pub connect_ui: ConnectUi,
    /// A hash of the text of every file read; equal fingerprints mean an unchanged configuration.
    pub fingerprint: u64,
}

impl Config {
    /// An empty configuration with an empty catalog, for tests of other parts.
    pub fn empty() -> Config {
        Config {
            version: 0,
            loaded_at: Utc::now(),
            path: PathBuf::new(),
            catalog: Catalog::default(),
            integrations: IndexMap::new(),
            models: IndexMap::new(),
            functions: Arc::default(),
            log_retention: DEFAULT_LOG_RETENTION,
            webhooks: crate::webhooks::Settings::default(),
            rate_limits: IndexMap::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            files: Vec::new(),
            fingerprint: 0,
            connect_ui: ConnectUi::default(),
        }
    }
}

/// Reads and validates everything; every problem found is returned, not just the first.
pub fn load(options: &LoadOptions, version: u64) -> Result<Config, Problems> {
    let path = &options.config_path;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut problems = Problems::default();

    let text = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !options.config_required => None,
        Err(e) => {
            problems.push(
                Problem::new(path, "", format!("cannot read the config file: {e}"))
                    .hint("pass --config with the path of your nango.yaml"),
            );
            return Err(problems);
        }
    };
    let mut functions = None;
    let document = match text.as_deref().map(yaml::parse) {
        None => NangoYaml::default(),
        Some(Err(e)) => {
            problems.push(e.in_file(path));
            return Err(problems);
        }
        Some(Ok(Value::Null)) => NangoYaml::default(),
        Some(Ok(value)) => {
            problems.0.extend(CONFIG_SCHEMA.check(&value, path, ""));
            if !problems.is_empty() {
                problems.locate(path, text.as_deref().unwrap_or_default());
                return Err(problems);
            }
            functions = Some(crate::functions::catalog::load(&value, path, &base_dir));
            match serde_json::from_value::<NangoYaml>(value) {
                Ok(doc) => doc,
                Err(e) => {
                    problems.push(Problem::new(path, "", e.to_string()));
                    return Err(problems);
                }
            }
        }
    };

    let mut sources = vec![match &options.catalog_dir {
        Some(dir) => catalog::Source::Directory(dir.clone()),
        None if base_dir.join("providers").is_dir() => catalog::Source::Directory(base_dir.join("providers")),
        None => catalog::Source::BuiltIn,
    }];
    sources.extend(document.catalogs.iter().map(|c| catalog::Source::File(base_dir.join(c))));
    let loaded = catalog::load(&sources);
    problems.extend(loaded.problems);

    let mut duration = |value: Option<&str>, pointer: &str, default: Duration| match value {
        None => default,
        Some(text) => crate::time::parse_duration(text).filter(|d| !d.is_zero()).unwrap_or_else(|| {
            problems.push(
                Problem::new(path, pointer, format!("`{text}` is not a duration"))
                    .hint("write a whole number and a unit: 500ms, 30s, 12h, 7d"),
            );
            default
        }),
    };
    let log_retention =
        duration(document.logs.as_ref().and_then(|l| l.retention.as_deref()), "/logs/retention", DEFAULT_LOG_RETENTION);
    let proxy = document.proxy.as_ref();
    let connect_timeout =
        duration(proxy.and_then(|p| p.connect_timeout.as_deref()), "/proxy/connect_timeout", DEFAULT_CONNECT_TIMEOUT);
    let read_timeout =
        duration(proxy.and_then(|p| p.read_timeout.as_deref()), "/proxy/read_timeout", DEFAULT_READ_TIMEOUT);

    for name in document.rate_limits.keys() {
        if loaded.catalog.get(name).is_none() {
            problems.push(
                Problem::new(
                    path,
                    format!("/rate_limits/{}", escape_pointer(name)),
                    format!("unknown provider `{name}`"),
                )
                .hint("rate_limits is keyed by provider name, as the catalog spells it"),
            );
        }
    }

    let mut integrations = IndexMap::new();
    for (key, entry) in document.integrations {
        let Some(entry) = entry.filter(IntegrationYaml::declares_integration) else { continue };
        match integration(&key, entry, &loaded.catalog, path, &base_dir) {
            Ok(integration) => {
                integrations.insert(key, Arc::new(integration));
            }
            Err(found) => problems.0.extend(found),
        }
    }

    let functions = functions.unwrap_or_else(crate::functions::catalog::Loaded::empty);
    problems.0.extend(functions.problems);
    let webhooks = webhook_settings(document.webhooks.unwrap_or_default(), path, &base_dir, &mut problems);

    if let Some(text) = &text {
        problems.locate(path, text);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut files = loaded.files;
    files.push(path.clone());
    files.extend(functions.files.iter().map(|(file, _)| file.clone()));
    let mut hasher = std::hash::DefaultHasher::new();
    (loaded.fingerprint, &text, &functions.files).hash(&mut hasher);
    Ok(Config {
        version,
        loaded_at: Utc::now(),
        path: path.clone(),
        catalog: loaded.catalog,
        integrations,
        log_retention,
        rate_limits: document.rate_limits,
        connect_timeout,
        read_timeout,
        models: document.models.into_iter().map(|(k, v)| (k, v.map(Value::Object).unwrap_or(Value::Null))).collect(),
        functions: Arc::new(functions.functions),
        webhooks,
        files,
        fingerprint: hasher.finish(),
        connect_ui: document.connect_ui,
    })
}

/// The webhook settings, the signing secret resolved.
fn webhook_settings(
    entry: model::WebhooksYaml,
    file: &Path,
    base_dir: &Path,
    problems: &mut Problems,
) -> crate::webhooks::Settings {
    let defaults = crate::webhooks::Settings::default();
    let signing_secret = entry.signing_secret.and_then(|value| {
        match reference::resolve(&value, base_dir, true, "LATCHKEY_WEBHOOK_SIGNING_SECRET") {
            Ok(v) => Some(Secret::new(v)),
            Err(e) => {
                problems.push(Problem::new(file, "/webhooks/signing_secret", e.message).hint(e.hint));
                None
            }
        }
    });
    crate::webhooks::Settings {
        urls: entry.primary_url.into_iter().chain(entry.secondary_url).collect(),
        signing_secret,
        on_auth_creation: entry.on_auth_creation.unwrap_or(defaults.on_auth_creation),
        on_auth_refresh_error: entry.on_auth_refresh_error.unwrap_or(defaults.on_auth_refresh_error),
        on_sync_completion_always: entry.on_sync_completion_always.unwrap_or(defaults.on_sync_completion_always),
        on_sync_error: entry.on_sync_error.unwrap_or(defaults.on_sync_error),
        on_async_action_completion: entry.on_async_action_completion.unwrap_or(defaults.on_async_action_completion),
    }
}

/// Compiles one declared integration, resolving its references.
fn integration(
    key: &str,
    entry: IntegrationYaml,
    catalog: &Catalog,
    file: &Path,
    base_dir: &Path,
) -> Result<Integration, Vec<Problem>> {
    let base = format!("/integrations/{}", escape_pointer(key));
    let mut problems = Vec::new();
    let provider_name = entry.provider.clone().unwrap_or_else(|| key.to_string());
    let provider = catalog.get(&provider_name);
    if provider.is_none() {
        let hint = match &entry.provider {
            Some(_) => "use a provider name from the catalog (`latchkey providers list`)".to_string(),
            None => format!("add `provider:`; `{key}` is not itself a provider name"),
        };
        problems.push(
            Problem::new(file, format!("{base}/provider"), format!("unknown provider `{provider_name}`")).hint(hint),
        );
    }

    let mut field = |name: &str, value: Option<String>, secret: bool| -> Option<String> {
        let value = value?;
        let env = reference::env_name(key, name);
        match reference::resolve(&value, base_dir, secret, &env) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(Problem::new(file, format!("{base}/{name}"), e.message).hint(e.hint));
                None
            }
        }
    };
    let credentials = AppCredentials {
        client_id: field("client_id", entry.client_id, false),
        client_secret: field("client_secret", entry.client_secret, true).map(Secret::new),
        scopes: entry.scopes.map(model::Scopes::into_list).unwrap_or_default(),
        webhook_secret: field("webhook_secret", entry.webhook_secret, true).map(Secret::new),
        app_id: field("app_id", entry.app_id, false),
        app_link: field("app_link", entry.app_link, false),
        private_key: field("private_key", entry.private_key, true).map(Secret::new),
    };
    let mut integration_config = serde_json::Map::new();
    for (name, value) in entry.integration_config {
        if let Some(v) = field(&format!("integration_config/{}", escape_pointer(&name)), Some(value), false) {
            integration_config.insert(name, Value::String(v));
        }
    }
    if let Some(provider) = provider {
        let declared = provider.entry.get("integration_config").and_then(Value::as_object);
        for name in integration_config.keys() {
            if !declared.is_some_and(|d| d.contains_key(name)) {
                let allowed: Vec<String> = declared.map(|d| d.keys().cloned().collect()).unwrap_or_default();
                let hint = if allowed.is_empty() {
                    format!("provider `{provider_name}` takes no integration_config")
                } else {
                    format!("provider `{provider_name}` takes: {}", allowed.join(", "))
                };
                problems.push(
                    Problem::new(
                        file,
                        format!("{base}/integration_config/{}", escape_pointer(name)),
                        format!("unknown integration_config key `{name}`"),
                    )
                    .hint(hint),
                );
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let now = Utc::now();
    Ok(Integration {
        unique_key: key.to_string(),
        provider: provider_name,
        display_name: entry.display_name,
        credentials,
        integration_config,
        custom: serde_json::Map::new(),
        forward_webhooks: entry.forward_webhooks.unwrap_or(true),
        allow_base_url_override: entry.allow_base_url_override,
        refresh_margin_seconds: entry.refresh_margin_seconds,
        origin: Origin::File(file.to_path_buf()),
        created_at: now,
        updated_at: now,
    })
}

#[cfg(test)]
mod tests;
