//! Nango's sync commands: `POST /sync/trigger|start|pause`, `GET /sync/status`, per-connection
//! frequencies (`PUT /sync/update-connection-frequency`) and variants
//! (`POST|DELETE /sync/:name/variant/:variant`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use sqlx::{QueryBuilder, Row};

use super::{ensure_schedules, initial_state, remove_instance_data, set_frequency};
use crate::api::extract::{Body, Query, SecretKey};
use crate::api::ApiError;
use crate::app::App;
use crate::connection::Connection;
use crate::functions::catalog::{self, SyncSpec};
use crate::records::{Dataset, Records};
use crate::store::StoreError;
use crate::time::{from_millis, iso, now_millis};
use crate::with_pool;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/sync/trigger", post(trigger))
        .route("/sync/start", post(start))
        .route("/sync/pause", post(pause))
        .route("/sync/status", get(status))
        .route("/sync/update-connection-frequency", put(update_frequency))
        .route("/sync/{name}/variant/{variant}", post(create_variant).delete(delete_variant))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SyncName {
    Name(String),
    WithVariant { name: String, variant: Option<String> },
}

impl SyncName {
    fn parts(&self) -> (String, String) {
        match self {
            // `name::variant`, as /sync/status writes it.
            SyncName::Name(full) => match full.split_once("::") {
                Some((name, variant)) => (name.to_string(), variant.to_string()),
                None => (full.clone(), "base".into()),
            },
            SyncName::WithVariant { name, variant } => (name.clone(), variant.clone().unwrap_or_else(|| "base".into())),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TriggerOpts {
    #[serde(default)]
    reset: bool,
    #[serde(default)]
    empty_cache: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    #[serde(default)]
    syncs: Vec<SyncName>,
    provider_config_key: String,
    connection_id: Option<String>,
    sync_mode: Option<String>,
    full_resync: Option<bool>,
    opts: Option<TriggerOpts>,
}

/// One schedule the command applies to.
struct Target {
    id: i64,
    connection: i64,
    connection_id: String,
    sync_name: String,
    variant: String,
    state: String,
    frequency_ms: i64,
    frequency_override: Option<String>,
    next_run_at: i64,
    last_sync_date: Option<i64>,
}

/// The schedules of the named syncs (all syncs when none is named) of the integration, for
/// one connection or all of them. Names that match no schedule match nothing.
async fn targets(
    app: &App,
    key: &str,
    connection_id: Option<&str>,
    syncs: &[(String, String)],
) -> Result<Vec<Target>, ApiError> {
    ensure_schedules(app, Some(key)).await?;
    let rows = with_pool!(&app.store.db, pool => {
        let mut q = QueryBuilder::new(
            "SELECT s.id, s.connection, c.connection_id, s.sync_name, s.variant, s.state, s.frequency_ms, s.next_run_at,
                    s.last_sync_date, s.frequency_override
             FROM sync_schedules s JOIN connections c ON c.id = s.connection WHERE c.provider_config_key = ",
        );
        q.push_bind(key);
        if let Some(id) = connection_id {
            q.push(" AND c.connection_id = ").push_bind(id);
        }
        q.push(" ORDER BY c.connection_id, s.sync_name");
        q.build().fetch_all(pool).await.map_err(StoreError::from)?
            .into_iter()
            .map(|row| -> Result<Target, sqlx::Error> {
                Ok(Target {
                    id: row.try_get(0)?,
                    connection: row.try_get(1)?,
                    connection_id: row.try_get(2)?,
                    sync_name: row.try_get(3)?,
                    variant: row.try_get(4)?,
                    state: row.try_get(5)?,
                    frequency_ms: row.try_get(6)?,
                    next_run_at: row.try_get(7)?,
                    last_sync_date: row.try_get(8)?,
                    frequency_override: row.try_get(9)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::from)?
    });
    Ok(rows
        .into_iter()
        .filter(|t| syncs.is_empty() || syncs.iter().any(|(n, v)| *n == t.sync_name && *v == t.variant))
        .collect())
}

/// The schedules a sync command applies to, checked as Nango checks them: an unknown connection
/// is 404 `unknown_connection`, and with no connection named, nothing to apply to is 400
/// `no_syncs_found`. A name that is not a configured sync, or a variant the connection lacks,
/// is 400 `unknown_sync`, where Nango ignores the name or fails with a 500.
async fn command_targets(app: &App, body: &CommandBody) -> Result<Vec<Target>, ApiError> {
    let key = &body.provider_config_key;
    let names: Vec<(String, String)> = body.syncs.iter().map(SyncName::parts).collect();
    for (name, _) in &names {
        configured_sync(app, key, name)?;
    }
    if let Some(id) = &body.connection_id {
        connection_of(app, key, id, NoConnection::NotFound).await?;
    }
    let targets = targets(app, key, body.connection_id.as_deref(), &names).await?;
    match &body.connection_id {
        Some(id) => {
            let missing = names.iter().find(|(n, v)| !targets.iter().any(|t| t.sync_name == *n && t.variant == *v));
            if let Some((name, variant)) = missing {
                return Err(no_variant(id, name, variant));
            }
        }
        None if targets.is_empty() => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "no_syncs_found",
                format!("no connection of integration `{key}` has the syncs to apply this to"),
            ))
        }
        None => {}
    }
    Ok(targets)
}

async fn trigger(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<CommandBody>,
) -> Result<Json<Value>, ApiError> {
    let full = match (&body.sync_mode, body.full_resync, &body.opts) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(ApiError::invalid_body(
                "`opts` cannot be combined with `sync_mode` or `full_resync`",
                &["opts"],
            ))
        }
        (Some(mode), _, None) => match mode.as_str() {
            "incremental" => (false, false),
            "full_refresh" => (true, false),
            "full_refresh_and_clear_cache" => (true, true),
            other => {
                return Err(ApiError::invalid_body(
                    format!("`sync_mode` is incremental, full_refresh or full_refresh_and_clear_cache, not `{other}`"),
                    &["sync_mode"],
                ))
            }
        },
        (None, Some(resync), None) => (resync, false),
        (None, None, Some(opts)) => (opts.reset || opts.empty_cache, opts.empty_cache),
        (None, None, None) => (false, false),
    };
    let (reset, empty_cache) = full;
    let targets = command_targets(&app, &body).await?;
    let config = app.config.current();
    let now = now_millis();
    for target in &targets {
        if reset {
            let key = format!("sync:{}:{}", target.sync_name, target.variant);
            crate::functions::save_checkpoint(&app.store.db, target.connection, &key, None).await?;
        }
        if empty_cache {
            let models = config.functions.get(&body.provider_config_key, &target.sync_name).map(|f| f.models.clone());
            let records = Records::new(app.store.db.clone());
            for model in models.unwrap_or_default() {
                records.clear(&Dataset::new(target.connection, &model, Some(&target.variant))).await.map_err(|e| {
                    tracing::error!("cannot empty the records of {model}: {e}");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the gateway could not empty the records",
                    )
                })?;
            }
        }
        with_pool!(&app.store.db, pool => sqlx::query(
            "UPDATE sync_schedules SET next_run_at = $2, next_run_kind = $3,
                 last_sync_date = CASE WHEN $4 THEN NULL ELSE last_sync_date END
             WHERE id = $1",
        )
        .bind(target.id)
        .bind(now)
        .bind(if reset { "FULL" } else { "INCREMENTAL" })
        .bind(reset)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(StoreError::from)?);
    }
    Ok(Json(json!({ "success": true })))
}

async fn start(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<CommandBody>,
) -> Result<Json<Value>, ApiError> {
    set_state(&app, &body, "STARTED").await
}

async fn pause(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<CommandBody>,
) -> Result<Json<Value>, ApiError> {
    set_state(&app, &body, "PAUSED").await
}

async fn set_state(app: &App, body: &CommandBody, state: &str) -> Result<Json<Value>, ApiError> {
    let now = now_millis();
    for target in command_targets(app, body).await? {
        if target.state == state {
            continue;
        }
        // Starting a paused sync runs it at once, then on its frequency.
        with_pool!(&app.store.db, pool => sqlx::query(
            "UPDATE sync_schedules SET state = $2, next_run_at = CASE WHEN $2 = 'STARTED' THEN $3 ELSE next_run_at END
             WHERE id = $1",
        )
        .bind(target.id)
        .bind(state)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(StoreError::from)?);
    }
    Ok(Json(json!({ "success": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    syncs: Option<String>,
    provider_config_key: Option<String>,
    connection_id: Option<String>,
}

async fn status(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = q
        .provider_config_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::invalid_query("`provider_config_key` is required", &["provider_config_key"]))?;
    let syncs =
        q.syncs.filter(|s| !s.is_empty()).ok_or_else(|| ApiError::invalid_query("`syncs` is required", &["syncs"]))?;
    let names: Vec<(String, String)> = if syncs == "*" {
        Vec::new()
    } else {
        syncs.split(',').map(|s| SyncName::Name(s.trim().to_string()).parts()).collect()
    };
    if let Some(id) = &q.connection_id {
        connection_of(&app, &key, id, NoConnection::InvalidBody).await?;
    }
    let config = app.config.current();
    let records = Records::new(app.store.db.clone());
    let mut out = Vec::new();
    // Like Nango, names that match no sync instance are left out of the answer, not refused.
    for target in targets(&app, &key, q.connection_id.as_deref(), &names).await? {
        let runs = with_pool!(&app.store.db, pool => sqlx::query(
            "SELECT status, kind, finished_at, results FROM sync_runs WHERE schedule = $1 ORDER BY id DESC LIMIT 2",
        )
        .bind(target.id)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .map(|row| -> Result<(String, String, Option<i64>, String), sqlx::Error> {
            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::from)?);
        let running = runs.first().is_some_and(|r| r.0 == "RUNNING");
        let finished = runs.iter().find(|r| r.0 != "RUNNING");
        let status = if running {
            "RUNNING"
        } else if target.state == "PAUSED" {
            "PAUSED"
        } else if finished.is_some_and(|r| r.0 == "FAILED") {
            "ERROR"
        } else {
            "SUCCESS"
        };
        let mut record_count = serde_json::Map::new();
        let function = config.functions.get(&key, &target.sync_name);
        let models = function.map(|f| f.models.clone()).unwrap_or_default();
        // The frequency in force: the one set for this connection, or else the configured `runs`.
        let frequency = target
            .frequency_override
            .clone()
            .or_else(|| function.and_then(|f| f.sync.as_ref()).map(|s| s.runs.clone()))
            .unwrap_or_else(|| format!("every {} seconds", target.frequency_ms / 1000));
        for model in models {
            let count =
                records.count(&Dataset::new(target.connection, &model, Some(&target.variant))).await.map_err(|e| {
                    tracing::error!("cannot count records of {model}: {e}");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the gateway could not count the records",
                    )
                })?;
            record_count.insert(model, json!(count));
        }
        let checkpoint: Option<String> = with_pool!(&app.store.db, pool => sqlx::query_scalar(
            "SELECT value FROM function_checkpoints WHERE connection = $1 AND key = $2",
        )
        .bind(target.connection)
        .bind(format!("sync:{}:{}", target.sync_name, target.variant))
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from)?);
        out.push(json!({
            "id": target.id.to_string(),
            "connection_id": target.connection_id,
            "name": target.sync_name,
            "variant": target.variant,
            "status": status,
            "type": if target.last_sync_date.is_some() { "INCREMENTAL" } else { "INITIAL" },
            "finishedAt": finished.and_then(|r| r.2).map(|t| iso(from_millis(t))),
            "nextScheduledSyncAt": (target.state == "STARTED").then(|| iso(from_millis(target.next_run_at))),
            "frequency": frequency,
            "latestResult": finished.map(|r| serde_json::from_str::<Value>(&r.3).unwrap_or(Value::Null)),
            "latestExecutionStatus": runs.first().map(|r| if r.0 == "FAILED" { "STOPPED" } else { r.0.as_str() }),
            "recordCount": record_count,
            "checkpoint": checkpoint.and_then(|c| serde_json::from_str::<Value>(&c).ok()),
        }));
    }
    Ok(Json(json!({ "syncs": out })))
}

/// A sync or variant name as Nango allows them. `:` is not among the characters, so a variant's
/// dataset (`Model::variant`) cannot be mistaken for another's.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What Nango answers for a connection that does not exist, which differs by endpoint.
#[derive(Clone, Copy)]
enum NoConnection {
    /// 400 `unknown_connection`: the frequency and variant endpoints.
    BadRequest,
    /// 404 `unknown_connection`: the sync commands, whose error type carries that status.
    NotFound,
    /// 400 `invalid_body`: `GET /sync/status`.
    InvalidBody,
}

/// The connection, or the endpoint's answer for one that does not exist.
async fn connection_of(app: &App, key: &str, id: &str, answer: NoConnection) -> Result<Arc<Connection>, ApiError> {
    app.store.connections.get(key, id).await?.ok_or_else(|| {
        let (status, code) = match answer {
            NoConnection::BadRequest => (StatusCode::BAD_REQUEST, "unknown_connection"),
            NoConnection::NotFound => (StatusCode::NOT_FOUND, "unknown_connection"),
            NoConnection::InvalidBody => (StatusCode::BAD_REQUEST, "invalid_body"),
        };
        ApiError::new(status, code, format!("There is no connection `{id}` for integration `{key}`"))
    })
}

/// Nango's 400 `unknown_sync` for a sync instance the connection does not have.
fn no_variant(connection_id: &str, name: &str, variant: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "unknown_sync",
        format!("connection `{connection_id}` has no variant `{variant}` of sync `{name}`"),
    )
}

/// The configured sync `name` of the integration, or Nango's 400 `unknown_sync`.
fn configured_sync(app: &App, key: &str, name: &str) -> Result<SyncSpec, ApiError> {
    match app.config.current().functions.get(key, name).and_then(|f| f.sync.clone()) {
        Some(spec) => Ok(spec),
        None => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_sync",
            format!("integration `{key}` has no sync `{name}` in the configuration"),
        )),
    }
}

/// The schedule of one sync instance.
async fn schedule_of(app: &App, connection: i64, name: &str, variant: &str) -> Result<Option<i64>, ApiError> {
    Ok(with_pool!(&app.store.db, pool => sqlx::query_scalar(
        "SELECT id FROM sync_schedules WHERE connection = $1 AND sync_name = $2 AND variant = $3",
    )
    .bind(connection)
    .bind(name)
    .bind(variant)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)?))
}

/// Present in the body, possibly as null: `Some(None)`; absent: `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyBody {
    sync_name: String,
    sync_variant: Option<String>,
    provider_config_key: String,
    connection_id: String,
    /// A frequency such as `every 30 minutes`, or null for the configured one.
    #[serde(default, deserialize_with = "present")]
    frequency: Option<Option<String>>,
}

/// Sets (or with `null` clears) the frequency of one sync instance of one connection. It is kept
/// in the database, so it outlives restarts and configuration changes.
async fn update_frequency(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Body(body): Body<FrequencyBody>,
) -> Result<Json<Value>, ApiError> {
    let requested = body.frequency.ok_or_else(|| {
        ApiError::invalid_body(
            "`frequency` is required: a frequency such as `every 30 minutes`, or null for the sync's `runs`",
            &["frequency"],
        )
    })?;
    let chosen = match requested.as_deref().map(str::trim) {
        Some(text) => Some(catalog::frequency(text).map(|every| (text.to_string(), every)).ok_or_else(|| {
            ApiError::invalid_body(
                format!("`{text}` is not a frequency; write it like `every 30 minutes`, `every 2h` or `every day`"),
                &["frequency"],
            )
        })?),
        None => None,
    };
    let (key, name) = (&body.provider_config_key, &body.sync_name);
    let variant = body.sync_variant.as_deref().unwrap_or("base");
    let connection = connection_of(&app, key, &body.connection_id, NoConnection::BadRequest).await?;
    let spec = configured_sync(&app, key, name)?;
    ensure_schedules(&app, Some(key)).await?;
    let schedule = schedule_of(&app, connection.id, name, variant)
        .await?
        .ok_or_else(|| no_variant(&body.connection_id, name, variant))?;
    let overridden = chosen.as_ref().map(|(text, _)| text.clone());
    let (text, every) = chosen.unwrap_or((spec.runs, spec.frequency));
    set_frequency(&app.store.db, schedule, every.as_millis() as i64, overridden.as_deref()).await?;
    tracing::info!(sync = %name, variant, connection = %body.connection_id, frequency = %text, "sync frequency set");
    Ok(Json(json!({ "frequency": text })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantBody {
    provider_config_key: String,
    connection_id: String,
}

/// The names in the path, checked; `base` is the sync's own instance, not a variant.
fn variant_path(name: &str, variant: &str) -> Result<(), ApiError> {
    if !valid_name(name) || !valid_name(variant) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_uri_params",
            "sync and variant names are 1 to 255 letters, digits, `_` or `-`",
        ));
    }
    if variant.eq_ignore_ascii_case("base") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_variant",
            format!("Variant name `{variant}` is protected: it is the sync's own instance"),
        ));
    }
    Ok(())
}

/// Creates a variant of a sync for one connection: its own schedule, checkpoint and records
/// (`Model::variant`), configured like the base one.
async fn create_variant(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Path((name, variant)): Path<(String, String)>,
    Body(body): Body<VariantBody>,
) -> Result<Json<Value>, ApiError> {
    variant_path(&name, &variant)?;
    let key = &body.provider_config_key;
    let connection = connection_of(&app, key, &body.connection_id, NoConnection::BadRequest).await?;
    let spec = configured_sync(&app, key, &name)?;
    let now = now_millis();
    let id: Option<i64> = with_pool!(&app.store.db, pool => sqlx::query_scalar(
        "INSERT INTO sync_schedules (connection, sync_name, variant, state, frequency_ms, next_run_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (connection, sync_name, variant) DO NOTHING RETURNING id",
    )
    .bind(connection.id)
    .bind(&name)
    .bind(&variant)
    .bind(initial_state(&spec))
    .bind(spec.frequency.as_millis() as i64)
    .bind(now)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)?);
    let id = id.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "sync_variant_already_exists",
            format!("connection `{}` already has variant `{variant}` of sync `{name}`", body.connection_id),
        )
    })?;
    tracing::info!(sync = %name, %variant, connection = %body.connection_id, "sync variant created");
    Ok(Json(json!({ "id": id.to_string(), "name": name, "variant": variant })))
}

/// Deletes a variant of a sync for one connection: it is no longer scheduled, and its checkpoint
/// and records go (records of a model another sync writes under the same variant stay).
async fn delete_variant(
    _: SecretKey,
    State(app): State<Arc<App>>,
    Path((name, variant)): Path<(String, String)>,
    Body(body): Body<VariantBody>,
) -> Result<Json<Value>, ApiError> {
    variant_path(&name, &variant)?;
    let key = &body.provider_config_key;
    let connection = connection_of(&app, key, &body.connection_id, NoConnection::BadRequest).await?;
    // Its runs go with it; one in progress cleans up after itself when it ends.
    let deleted = with_pool!(&app.store.db, pool => sqlx::query(
        "DELETE FROM sync_schedules WHERE connection = $1 AND sync_name = $2 AND variant = $3",
    )
    .bind(connection.id)
    .bind(&name)
    .bind(&variant)
    .execute(pool)
    .await
    .map_err(StoreError::from)?
    .rows_affected());
    if deleted == 0 {
        // An unknown sync says more than a missing variant.
        configured_sync(&app, key, &name)?;
        return Err(ApiError::not_found(format!(
            "connection `{}` has no variant `{variant}` of sync `{name}`",
            body.connection_id
        )));
    }
    remove_instance_data(&app, key, connection.id, &name, &variant).await.map_err(|e| {
        tracing::error!(sync = %name, %variant, "cannot remove the data of a deleted sync variant: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the variant is deleted, but the gateway could not remove its records",
        )
    })?;
    tracing::info!(sync = %name, %variant, connection = %body.connection_id, "sync variant deleted");
    Ok(Json(json!({ "success": true })))
}
