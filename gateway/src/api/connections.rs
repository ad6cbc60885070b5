//! Connections: list, read (credentials included), import, patch, delete, metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::extract::{flag, Body, Query, SecretKey};
use crate::app::App;
use crate::auth::refresh::RefreshError;
use crate::connection::{Connection, Credentials, EndUser, Organization};
use crate::store::connections::{ListFilter, NewConnection, Patch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    connection_id: Option<String>,
    search: Option<String>,
    end_user_id: Option<String>,
    end_user_organization_id: Option<String>,
    integration_id: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    limit: Option<String>,
    page: Option<String>,
}

pub async fn list(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = number(&q.limit, "limit", 1, 10_000)?.unwrap_or(10_000);
    let page = number(&q.page, "page", 0, i64::MAX / 10_000)?.unwrap_or(0);
    let filter = ListFilter {
        connection_id: q.connection_id,
        search: q.search.filter(|s| !s.is_empty()),
        end_user_id: q.end_user_id,
        end_user_organization_id: q.end_user_organization_id,
        integrations: q
            .integration_id
            .map(|ids| ids.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        tags: q.tags,
        limit,
        page,
    };
    let connections = app.store.connections.list(&filter).await?;
    let items: Vec<Value> = connections.iter().map(|c| c.to_api_summary()).collect();
    Ok(Json(json!({ "connections": items })))
}

fn number(value: &Option<String>, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
    let Some(text) = value else { return Ok(None) };
    match text.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::invalid_query(format!("`{name}` must be a whole number from {min} to {max}"), &[name])),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    provider_config_key: Option<String>,
    force_refresh: Option<String>,
    refresh_token: Option<String>,
    refresh_github_app_jwt_token: Option<String>,
}

pub async fn show(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Path(connection_id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = required_key(q.provider_config_key)?;
    let force_refresh = flag(&q.force_refresh, "force_refresh")?;
    flag(&q.refresh_github_app_jwt_token, "refresh_github_app_jwt_token")?;
    let with_refresh_token = flag(&q.refresh_token, "refresh_token")?;
    let config = app.config.current();
    let Some(integration) = app.integration(&config, &key) else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "unknown_provider_config", "Provider does not exists"));
    };
    let now = Utc::now();
    let mut connection = app
        .store
        .connections
        .get(&key, &connection_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Failed to find connection"))?;
    if let Some(provider) = config.catalog.get(&integration.provider) {
        let refreshed = if force_refresh {
            app.refresh.force(&integration, provider, Arc::clone(&connection)).await
        } else {
            app.refresh.fresh(&integration, provider, Arc::clone(&connection)).await
        };
        connection = refreshed.map_err(|e| match e {
            RefreshError::Store(e) => ApiError::from(e),
            other => ApiError::new(other.status(), "invalid_credentials", other.public_message())
                .with_payload(json!({ "connection": connection.to_api_summary() })),
        })?;
    }
    app.store.connections.touch(&key, &connection_id, now).await?;
    let mut connection = Connection::clone(&connection);
    connection.last_fetched_at = Some(now);
    Ok(Json(connection.to_api_full(with_refresh_token)))
}

fn required_key(key: Option<String>) -> Result<String, ApiError> {
    key.filter(|k| !k.is_empty()).ok_or_else(|| {
        ApiError::invalid_query(
            "`provider_config_key` is required: the integration's unique key",
            &["provider_config_key"],
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    provider_config_key: Option<String>,
}

pub async fn delete(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Path(connection_id): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = required_key(q.provider_config_key)?;
    if app.store.connections.delete(&key, &connection_id).await? {
        Ok(Json(json!({ "success": true })))
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_connection",
            format!("There is no connection `{connection_id}` for integration `{key}`"),
        ))
    }
}

/// `end_user` as the API takes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndUserBody {
    pub id: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub tags: Option<Map<String, Value>>,
    pub organization: Option<OrganizationBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationBody {
    pub id: String,
    pub display_name: Option<String>,
}

impl EndUserBody {
    pub fn validate(self, at: &str) -> Result<EndUser, ApiError> {
        if self.id.is_empty() || self.id.len() > 255 {
            return Err(ApiError::invalid_body("must be 1 to 255 characters", &[at, "id"]));
        }
        if let Some(email) = &self.email {
            let plausible = email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
            if !plausible {
                return Err(ApiError::invalid_body("must be an email address", &[at, "email"]));
            }
        }
        let organization = match self.organization {
            Some(o) if o.id.is_empty() || o.id.len() > 255 => {
                return Err(ApiError::invalid_body("must be 1 to 255 characters", &[at, "organization", "id"]))
            }
            Some(o) => Some(Organization { id: o.id, display_name: o.display_name }),
            None => None,
        };
        Ok(EndUser { id: self.id, email: self.email, display_name: self.display_name, tags: self.tags, organization })
    }
}

/// Nango's tag rules: at most 10, keys like identifiers of up to 64 characters, values up to 255.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if tags.len() > 10 {
        return Err(ApiError::invalid_body("at most 10 tags", &["tags"]));
    }
    for (key, value) in tags {
        let key_ok = key.len() <= 64
            && key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
        if !key_ok {
            return Err(ApiError::invalid_body(
                "tag keys start with a letter and hold up to 64 letters, digits and _ - . /",
                &["tags", key],
            ));
        }
        if value.len() > 255 {
            return Err(ApiError::invalid_body("tag values hold up to 255 characters", &["tags", key]));
        }
    }
    Ok(())
}

pub fn validate_connection_id(id: &str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 255
        && id.chars().all(|c| c.is_ascii_alphanumeric() || ",.;:=+~[]|@${}\"'\\/_ -".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid_body(
            "must be 1 to 255 characters from letters, digits, space and , . ; : = + ~ [ ] | @ $ { } \" ' \\ / _ -",
            &["connection_id"],
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    end_user: Option<EndUserBody>,
    tags: Option<BTreeMap<String, String>>,
    webhook_url_override: Option<String>,
}

pub async fn patch(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Path(connection_id): Path<String>,
    Query(q): Query<KeyQuery>,
    Body(body): Body<PatchBody>,
) -> Result<Json<Value>, ApiError> {
    let key = required_key(q.provider_config_key)?;
    let config = app.config.current();
    if app.integration(&config, &key).is_none() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "unknown_provider_config", "Provider does not exists"));
    }
    if let Some(tags) = &body.tags {
        validate_tags(tags)?;
    }
    let webhook_url_override = match body.webhook_url_override {
        None => None,
        Some(url) if url.is_empty() => Some(None),
        Some(url) => Some(Some(validate_url(&url, "webhook_url_override")?)),
    };
    let patch = Patch {
        end_user: body.end_user.map(|u| u.validate("end_user")).transpose()?,
        tags: body.tags,
        webhook_url_override,
    };
    if app.store.connections.patch(&key, &connection_id, &patch).await? {
        Ok(Json(json!({ "success": true })))
    } else {
        Err(ApiError::not_found("Failed to find connection"))
    }
}

fn validate_url(url: &str, field: &str) -> Result<String, ApiError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(url.to_string()),
        _ => Err(ApiError::invalid_body("must be an http or https URL", &[field])),
    }
}

/// Imported credentials, by type.
#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ImportedCredentials {
    #[serde(rename = "OAUTH2")]
    OAuth2 {
        access_token: String,
        refresh_token: Option<String>,
        expires_at: Option<Value>,
        config_override: Option<Value>,
        raw: Option<Value>,
    },
    #[serde(rename = "OAUTH2_CC")]
    OAuth2Cc {
        token: String,
        client_id: String,
        client_secret: String,
        client_certificate: Option<String>,
        client_private_key: Option<String>,
        expires_at: Option<Value>,
    },
    #[serde(rename = "OAUTH1")]
    OAuth1 { oauth_token: String, oauth_token_secret: String },
    #[serde(rename = "API_KEY")]
    ApiKey {
        #[serde(rename = "apiKey")]
        api_key: String,
    },
    #[serde(rename = "BASIC")]
    Basic { username: String, password: String },
    #[serde(rename = "TBA")]
    Tba { token_id: String, token_secret: String, config_override: Option<Value> },
    #[serde(rename = "NONE")]
    None {},
    /// A GitHub App installation; its token is minted at import.
    #[serde(rename = "APP")]
    App { app_id: Option<String>, installation_id: Value },
    /// The end user's fields, whatever the provider reads; a token is signed with them at
    /// import (one given is replaced). A map, so that unknown fields are allowed here.
    #[serde(rename = "JWT")]
    Jwt(Map<String, Value>),
}

/// Imported credentials: ready to store, or a GitHub App installation whose token is minted.
enum Imported {
    Ready(Credentials),
    AppInstallation { app_id: Option<String>, installation_id: String },
    JwtFields(Map<String, Value>),
}

impl ImportedCredentials {
    fn into_credentials(self) -> Result<Imported, ApiError> {
        let expiry = |v: Option<Value>| -> Result<Option<DateTime<Utc>>, ApiError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(v) => crate::time::parse_instant(&v).map(Some).ok_or_else(|| {
                    ApiError::invalid_body("must be an ISO 8601 date or epoch time", &["credentials", "expires_at"])
                }),
            }
        };
        let required = |value: &str, field: &'static str| -> Result<(), ApiError> {
            if value.is_empty() {
                Err(ApiError::invalid_body("must not be empty", &["credentials", field]))
            } else {
                Ok(())
            }
        };
        Ok(Imported::Ready(match self {
            ImportedCredentials::OAuth2 { access_token, refresh_token, expires_at, config_override, raw } => {
                required(&access_token, "access_token")?;
                let raw = raw.unwrap_or_else(|| {
                    json!({ "access_token": access_token, "refresh_token": refresh_token, "expires_at": expires_at })
                });
                Credentials::OAuth2 {
                    expires_at: expiry(expires_at)?,
                    access_token,
                    refresh_token: refresh_token.filter(|t| !t.is_empty()),
                    raw,
                    config_override,
                }
            }
            ImportedCredentials::OAuth2Cc {
                token,
                client_id,
                client_secret,
                client_certificate,
                client_private_key,
                expires_at,
            } => {
                required(&token, "token")?;
                Credentials::OAuth2Cc {
                    expires_at: expiry(expires_at)?,
                    raw: json!({ "access_token": token }),
                    token,
                    client_id,
                    client_secret,
                    client_certificate,
                    client_private_key,
                }
            }
            ImportedCredentials::OAuth1 { oauth_token, oauth_token_secret } => {
                required(&oauth_token, "oauth_token")?;
                Credentials::OAuth1 { oauth_token, oauth_token_secret, raw: Value::Null }
            }
            ImportedCredentials::ApiKey { api_key } => {
                required(&api_key, "apiKey")?;
                Credentials::ApiKey { api_key }
            }
            ImportedCredentials::Basic { username, password } => {
                required(&username, "username")?;
                Credentials::Basic { username, password }
            }
            ImportedCredentials::Tba { token_id, token_secret, config_override } => {
                required(&token_id, "token_id")?;
                Credentials::Tba { token_id, token_secret, config_override }
            }
            ImportedCredentials::None {} => Credentials::None,
            ImportedCredentials::App { app_id, installation_id } => {
                let installation_id = match installation_id {
                    Value::String(s) if !s.is_empty() => s,
                    Value::Number(n) => n.to_string(),
                    _ => {
                        return Err(ApiError::invalid_body(
                            "must be the installation's id",
                            &["credentials", "installation_id"],
                        ))
                    }
                };
                return Ok(Imported::AppInstallation { app_id, installation_id });
            }
            ImportedCredentials::Jwt(mut fields) => {
                fields.remove("token");
                fields.remove("expires_at");
                return Ok(Imported::JwtFields(fields));
            }
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    provider_config_key: String,
    connection_id: Option<String>,
    metadata: Option<Map<String, Value>>,
    connection_config: Option<Map<String, Value>>,
    webhook_url_override: Option<String>,
    end_user: Option<EndUserBody>,
    tags: Option<BTreeMap<String, String>>,
    credentials: ImportedCredentials,
}

pub async fn import(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<ImportBody>,
) -> Result<Response, ApiError> {
    let config = app.config.current();
    let integration = app.integration(&config, &body.provider_config_key).ok_or_else(|| {
        ApiError::not_found(format!("There is no integration `{}`", body.provider_config_key))
            .with_issue(super::error::Issue::new("invalid_value", "unknown integration", &["provider_config_key"]))
    })?;
    let connection_id = body.connection_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    validate_connection_id(&connection_id)?;
    let mut connection_config = body.connection_config.unwrap_or_default();
    let catalogued = || {
        config.catalog.get(&integration.provider).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_provider",
                "the integration's provider is not in the catalog",
            )
        })
    };
    let credentials = match body.credentials.into_credentials()? {
        Imported::Ready(credentials) => credentials,
        Imported::AppInstallation { app_id, installation_id } => {
            if app_id.as_ref().is_some_and(|id| Some(id) != integration.credentials.app_id.as_ref()) {
                return Err(ApiError::invalid_body(
                    format!("integration `{}` is another GitHub App", integration.unique_key),
                    &["credentials", "app_id"],
                ));
            }
            let provider = catalogued()?;
            let (credentials, with_installation) =
                crate::auth::app::credentials(&app, provider, &integration, &connection_config, &installation_id)
                    .await
                    .map_err(|(_, message)| {
                        ApiError::new(StatusCode::BAD_REQUEST, "connection_test_failed", message)
                    })?;
            connection_config = with_installation;
            credentials
        }
        Imported::JwtFields(fields) => {
            let provider = catalogued()?;
            let fields = crate::auth::jwt::split_pairs(provider, fields);
            crate::auth::jwt::sign(provider, &fields, &connection_config, Utc::now())
                .map_err(|e| e.into_api(&provider.name, &["credentials"]))?
                .into_credentials(fields)
        }
    };
    if let Some(provider) = config.catalog.get(&integration.provider) {
        let mode = provider.auth_mode.map(|m| m.as_str()).unwrap_or("NONE");
        if credentials.mode() != mode {
            return Err(ApiError::invalid_body(
                format!(
                    "provider `{}` uses {mode}; credentials of type {} do not fit",
                    provider.name,
                    credentials.mode()
                ),
                &["credentials", "type"],
            ));
        }
    }
    let end_user = body.end_user.map(|u| u.validate("end_user")).transpose()?;
    let mut tags = end_user.as_ref().map(EndUser::derived_tags).unwrap_or_default();
    tags.extend(body.tags.unwrap_or_default());
    validate_tags(&tags)?;
    let webhook_url_override = body
        .webhook_url_override
        .filter(|u| !u.is_empty())
        .map(|u| validate_url(&u, "webhook_url_override"))
        .transpose()?;
    let new = NewConnection {
        provider_config_key: integration.unique_key.clone(),
        connection_id,
        provider: integration.provider.clone(),
        credentials,
        connection_config,
        metadata: body.metadata,
        tags,
        end_user,
        webhook_url_override,
    };
    let (connection, upserted) = app.store.connections.upsert(&new).await?;
    app.webhooks.connection_saved(&connection, upserted).await;
    Ok((StatusCode::CREATED, Json(connection.to_api_full(true))).into_response())
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataBody {
    connection_id: OneOrMany,
    provider_config_key: String,
    metadata: Map<String, Value>,
}

pub async fn set_metadata(
    key: SecretKey,
    app: State<Arc<App>>,
    body: Body<MetadataBody>,
) -> Result<Response, ApiError> {
    write_metadata(key, app, body, false).await
}

pub async fn update_metadata(
    key: SecretKey,
    app: State<Arc<App>>,
    body: Body<MetadataBody>,
) -> Result<Response, ApiError> {
    write_metadata(key, app, body, true).await
}

async fn write_metadata(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<MetadataBody>,
    merge: bool,
) -> Result<Response, ApiError> {
    let ids = match &body.connection_id {
        OneOrMany::One(id) => vec![id.clone()],
        OneOrMany::Many(ids) => ids.clone(),
    };
    if ids.is_empty() {
        return Err(ApiError::invalid_body("name at least one connection", &["connection_id"]));
    }
    let missing = app.store.connections.set_metadata(&body.provider_config_key, &ids, &body.metadata, merge).await?;
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_connection",
            format!(
                "Connection with connection id {} and provider config key {} not found; nothing was changed",
                missing.join(", "),
                body.provider_config_key
            ),
        ));
    }
    let status = if merge { StatusCode::OK } else { StatusCode::CREATED };
    let connection_id = match body.connection_id {
        OneOrMany::One(id) => Value::String(id),
        OneOrMany::Many(ids) => json!(ids),
    };
    let echo = json!({
        "connection_id": connection_id,
        "provider_config_key": body.provider_config_key,
        "metadata": body.metadata,
    });
    Ok((status, Json(echo)).into_response())
}
