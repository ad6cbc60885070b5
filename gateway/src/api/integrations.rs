//! `GET|POST /integrations` and `GET|PATCH|DELETE /integrations/:key`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::extract::{Body, Query, SecretKey};
use crate::app::App;
use crate::auth::sessions::Caller;
use crate::catalog::{AuthMode, Provider};
use crate::config::{split_scopes, Config};
use crate::integration::{AppCredentials, Include, Integration, Origin};
use crate::secret::Secret;
use crate::store::integrations::WriteError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// With a connect session, only the integrations the session allows.
pub async fn list(caller: Caller, State(app): State<Arc<App>>, _: Query<Empty>) -> Json<Value> {
    let config = app.config.current();
    let data: Vec<Value> = app
        .integrations(&config)
        .iter()
        .filter(|i| match &caller {
            Caller::Backend => true,
            Caller::Session(session) => session.allows(&i.unique_key),
        })
        .map(|i| i.to_api(config.catalog.get(&i.provider).map(|p| &**p), &app.server_url, Include::default()))
        .collect();
    Json(json!({ "data": data }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    include: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

pub async fn show(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut include = Include::default();
    let asked = match q.include {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    for item in asked.iter().flat_map(|s| s.split(',')) {
        match item {
            "webhook" => include.webhook = true,
            "credentials" => include.credentials = true,
            other => {
                return Err(ApiError::invalid_query(
                    format!("`include` takes `webhook` or `credentials`, not `{other}`"),
                    &["include"],
                ))
            }
        }
    }
    let config = app.config.current();
    let integration =
        app.integration(&config, &key).ok_or_else(|| ApiError::not_found("Integration does not exist"))?;
    let provider = config.catalog.get(&integration.provider).map(|p| &**p);
    Ok(Json(json!({ "data": integration.to_api(provider, &app.server_url, include) })))
}

/// The `credentials` object of Nango's integration bodies.
#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum CredentialsBody {
    #[serde(rename = "OAUTH2", alias = "OAUTH1", alias = "TBA")]
    OAuth {
        client_id: String,
        client_secret: String,
        #[serde(default)]
        scopes: Option<String>,
        #[serde(default)]
        webhook_secret: Option<String>,
    },
    #[serde(rename = "APP")]
    App { app_id: String, app_link: String, private_key: String },
    #[serde(rename = "CUSTOM")]
    Custom { client_id: String, client_secret: String, app_id: String, app_link: String, private_key: String },
}

impl CredentialsBody {
    fn fits(&self, mode: Option<AuthMode>) -> bool {
        match self {
            CredentialsBody::OAuth { .. } => !matches!(mode, Some(AuthMode::App | AuthMode::Custom)),
            CredentialsBody::App { .. } => mode == Some(AuthMode::App),
            CredentialsBody::Custom { .. } => mode == Some(AuthMode::Custom),
        }
    }

    fn into_app_credentials(self) -> AppCredentials {
        let non_empty = |s: String| Some(s).filter(|s| !s.is_empty());
        match self {
            CredentialsBody::OAuth { client_id, client_secret, scopes, webhook_secret } => AppCredentials {
                client_id: non_empty(client_id),
                client_secret: non_empty(client_secret).map(Secret::new),
                scopes: scopes.as_deref().map(split_scopes).unwrap_or_default(),
                webhook_secret: webhook_secret.and_then(non_empty).map(Secret::new),
                ..AppCredentials::default()
            },
            CredentialsBody::App { app_id, app_link, private_key } => AppCredentials {
                app_id: non_empty(app_id),
                app_link: non_empty(app_link),
                private_key: non_empty(private_key).map(Secret::new),
                ..AppCredentials::default()
            },
            CredentialsBody::Custom { client_id, client_secret, app_id, app_link, private_key } => AppCredentials {
                client_id: non_empty(client_id),
                client_secret: non_empty(client_secret).map(Secret::new),
                app_id: non_empty(app_id),
                app_link: non_empty(app_link),
                private_key: non_empty(private_key).map(Secret::new),
                ..AppCredentials::default()
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    provider: String,
    unique_key: String,
    display_name: Option<String>,
    forward_webhooks: Option<bool>,
    credentials: Option<CredentialsBody>,
    integration_config: Option<Map<String, Value>>,
    custom: Option<Map<String, Value>>,
    /// Latchkey: allow `Base-Url-Override` to other hosts than the provider's.
    allow_base_url_override: Option<bool>,
}

pub async fn create(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<CreateBody>,
) -> Result<Json<Value>, ApiError> {
    let config = app.config.current();
    validate_unique_key(&body.unique_key, "unique_key")?;
    refuse_declared(&config, &body.unique_key)?;
    let provider = config.catalog.get(&body.provider).cloned().ok_or_else(|| {
        ApiError::invalid_body(format!("Unknown provider `{}`; see GET /providers", body.provider), &["provider"])
    })?;
    let integration_config = checked_integration_config(&provider, body.integration_config.unwrap_or_default())?;
    let credentials = match body.credentials {
        None => AppCredentials { scopes: provider.default_scopes.clone(), ..AppCredentials::default() },
        Some(c) if c.fits(provider.auth_mode) => c.into_app_credentials(),
        Some(_) => return Err(incompatible(&provider)),
    };
    let now = Utc::now();
    let integration = Integration {
        unique_key: body.unique_key,
        provider: provider.name.clone(),
        display_name: body.display_name,
        credentials,
        integration_config,
        custom: body.custom.unwrap_or_default(),
        forward_webhooks: body.forward_webhooks.unwrap_or(true),
        allow_base_url_override: body.allow_base_url_override.unwrap_or(false),
        refresh_margin_seconds: None,
        origin: Origin::Api,
        created_at: now,
        updated_at: now,
    };
    let created = app.store.integrations.create(&integration).await.map_err(write_error)?;
    Ok(Json(json!({ "data": created.to_api(Some(&provider), &app.server_url, Include::default()) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    unique_key: Option<String>,
    display_name: Option<String>,
    forward_webhooks: Option<bool>,
    credentials: Option<CredentialsBody>,
    integration_config: Option<Map<String, Value>>,
    custom: Option<Map<String, Value>>,
    allow_base_url_override: Option<bool>,
}

pub async fn update(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    Body(body): Body<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let config = app.config.current();
    refuse_declared(&config, &key)?;
    let current = app.store.integrations.get(&key).ok_or_else(|| ApiError::not_found("Integration does not exist"))?;
    let provider = config.catalog.get(&current.provider).cloned();
    let mut next = (*current).clone();
    if let Some(new_key) = body.unique_key {
        validate_unique_key(&new_key, "unique_key")?;
        refuse_declared(&config, &new_key)?;
        next.unique_key = new_key;
    }
    if let Some(name) = body.display_name {
        next.display_name = Some(name);
    }
    if let Some(forward) = body.forward_webhooks {
        next.forward_webhooks = forward;
    }
    if let Some(allow) = body.allow_base_url_override {
        next.allow_base_url_override = allow;
    }
    if let Some(c) = body.credentials {
        if !c.fits(provider.as_ref().and_then(|p| p.auth_mode)) {
            return Err(provider.as_ref().map(|p| incompatible(p)).unwrap_or_else(|| {
                ApiError::invalid_body("the integration's provider is no longer in the catalog", &["credentials"])
            }));
        }
        next.credentials = c.into_app_credentials();
    }
    if let Some(ic) = body.integration_config {
        next.integration_config = match &provider {
            Some(p) => checked_integration_config(p, ic)?,
            None => ic,
        };
    }
    if let Some(custom) = body.custom {
        next.custom = custom;
    }
    let updated = app.store.integrations.update(&key, &next).await.map_err(write_error)?;
    Ok(Json(json!({ "data": updated.to_api(provider.as_deref(), &app.server_url, Include::default()) })))
}

pub async fn delete(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = app.config.current();
    refuse_declared(&config, &key)?;
    if app.store.integrations.delete(&key).await? {
        Ok(Json(json!({ "success": true })))
    } else {
        Err(ApiError::not_found("Integration does not exist"))
    }
}

/// Integrations declared in a config file are changed there, not through the API.
fn refuse_declared(config: &Config, key: &str) -> Result<(), ApiError> {
    match config.integrations.get(key).map(|i| &i.origin) {
        Some(Origin::File(file)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "integration_declared_in_config",
            format!(
                "Integration `{key}` is declared in {}; change it there (the file is reloaded automatically)",
                file.display()
            ),
        )),
        _ => Ok(()),
    }
}

pub fn validate_unique_key(key: &str, field: &str) -> Result<(), ApiError> {
    let valid =
        !key.is_empty() && key.len() <= 255 && key.chars().all(|c| c.is_ascii_alphanumeric() || "~:.@ _-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_body(
            "must be 1 to 255 characters from letters, digits and ~ : . @ _ - and space",
            &[field],
        ))
    }
}

fn checked_integration_config(provider: &Provider, config: Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let declared = provider.entry.get("integration_config").and_then(Value::as_object);
    for (key, value) in &config {
        if !declared.is_some_and(|d| d.contains_key(key)) {
            let allowed: Vec<String> = declared.map(|d| d.keys().cloned().collect()).unwrap_or_default();
            let message = if allowed.is_empty() {
                format!("provider `{}` takes no integration_config", provider.name)
            } else {
                format!("unknown key `{key}`; provider `{}` takes {}", provider.name, allowed.join(", "))
            };
            return Err(ApiError::invalid_body(message, &["integration_config", key]));
        }
        if !value.is_string() {
            return Err(ApiError::invalid_body(
                "integration_config values must be strings",
                &["integration_config", key],
            ));
        }
    }
    Ok(config)
}

fn incompatible(provider: &Provider) -> ApiError {
    let expected = match provider.auth_mode {
        Some(AuthMode::App) => "APP",
        Some(AuthMode::Custom) => "CUSTOM",
        _ => "OAUTH2 (or OAUTH1, TBA)",
    };
    ApiError::invalid_body(
        format!("credentials of this type do not fit provider `{}`; use type {expected}", provider.name),
        &["credentials", "type"],
    )
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Duplicate(_) => ApiError::invalid_body("Unique key already exists", &["unique_key"]),
        WriteError::RenameWithConnections(_) => ApiError::invalid_body(e.to_string(), &["unique_key"]),
        WriteError::NotFound(_) => ApiError::not_found("Integration does not exist"),
        WriteError::Store(s) => s.into(),
    }
}
