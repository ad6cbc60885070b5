//! The scheduler: each sync runs per connection on its frequency, never twice at once.
//!
//! Every node ticks once a second: it makes sure each (sync, connection) has a schedule, fails
//! runs whose node stopped sending heartbeats, and claims due schedules (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`, so any number of nodes share the work; SQLite: one node). A
//! partial unique index allows one RUNNING run per schedule whatever happens. Records are
//! upserted by id and the incremental starting point only moves when a run succeeds, so a run
//! cut short (even by SIGKILL) is simply done again: nothing is lost and nothing doubles.

pub mod api;

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{json, Value};
use sqlx::Row;

use crate::app::App;
use crate::functions::{self, Context, Function, Limits, SyncRun};
use crate::store::{BeginWrite, Db, StoreError};
use crate::time::{from_millis, iso, now_millis};
use crate::webhooks::Event;
use crate::with_pool;

const TICK: Duration = Duration::from_secs(1);
/// Runs each node executes at once.
const CONCURRENT_RUNS: usize = 4;

/// A run (or an async action's attempt) without a heartbeat for this long
/// (`LATCHKEY_SYNC_STALE_MS`) belongs to a node that stopped; it is marked failed and the sync
/// runs again (the action, while it has retries left).
pub fn stale_after() -> i64 {
    std::env::var("LATCHKEY_SYNC_STALE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(60_000)
}

const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Drops the payload of records deleted more than `LATCHKEY_RECORDS_PRUNE_AFTER_DAYS` (default
/// 30; 0 never) ago. Their metadata stays, so cursors and `filter=deleted` keep working.
async fn prune(app: &App) {
    let days: i64 = std::env::var("LATCHKEY_RECORDS_PRUNE_AFTER_DAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    if days <= 0 {
        return;
    }
    let now = now_millis();
    match crate::records::Records::new(app.store.db.clone()).prune_deleted(now - days * 86_400_000, now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!("pruned the payload of {n} records deleted more than {days} days ago"),
        Err(e) => tracing::warn!("cannot prune deleted records: {e}"),
    }
    functions::tasks::prune(&app.store.db).await;
}

/// Starts the scheduler loop: sync runs and async actions' attempts.
pub fn spawn(app: Arc<App>) {
    let started = now_millis();
    tokio::spawn(async move {
        if !app.store.db.is_postgres() {
            // One SQLite file has one node: whatever is RUNNING was cut short by this node's stop.
            if let Err(e) = fail_runs(&app.store.db, None, "the gateway stopped during the run").await {
                tracing::error!("cannot mark interrupted sync runs as failed: {e}");
            }
            // Actions accepted since this start may be running already.
            if let Err(e) = functions::tasks::take_over(&app, started).await {
                tracing::error!("cannot take up the async actions the last stop interrupted: {e}");
            }
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_RUNS));
        let action_permits = Arc::new(tokio::sync::Semaphore::new(functions::tasks::CONCURRENT_ATTEMPTS));
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = None;
        loop {
            ticker.tick().await;
            if let Err(e) = tick(&app, &permits).await {
                tracing::warn!("scheduler tick failed: {e}");
            }
            if let Err(e) = functions::tasks::tick(&app, &action_permits).await {
                tracing::warn!("scheduler tick failed for async actions: {e}");
            }
            if last_prune.is_none_or(|t: std::time::Instant| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(std::time::Instant::now());
                prune(&app).await;
            }
        }
    });
}

async fn tick(app: &Arc<App>, permits: &Arc<tokio::sync::Semaphore>) -> Result<(), StoreError> {
    let config = app.config.current();
    if config.functions.is_empty() {
        return Ok(());
    }
    ensure_schedules(app, None).await?;
    if app.store.db.is_postgres() {
        fail_runs(&app.store.db, Some(now_millis() - stale_after()), "the node running it stopped sending heartbeats")
            .await?;
    }
    let free = permits.available_permits();
    if free == 0 {
        return Ok(());
    }
    for claimed in claim(app, free as i64).await? {
        let Ok(permit) = Arc::clone(permits).acquire_owned().await else { break };
        let app = Arc::clone(app);
        tokio::spawn(async move {
            execute(&app, claimed).await;
            drop(permit);
        });
    }
    Ok(())
}

/// The state a new schedule of the sync starts in.
pub fn initial_state(spec: &functions::catalog::SyncSpec) -> &'static str {
    if spec.auto_start {
        "STARTED"
    } else {
        "PAUSED"
    }
}

/// Creates the missing schedules of every sync of the configuration (of one integration), one
/// per connection, and follows frequency changes.
pub async fn ensure_schedules(app: &App, integration: Option<&str>) -> Result<(), StoreError> {
    let config = app.config.current();
    let now = now_millis();
    for function in config.functions.all() {
        let Some(spec) = &function.sync else { continue };
        if integration.is_some_and(|i| i != function.integration) {
            continue;
        }
        let frequency = spec.frequency.as_millis() as i64;
        let state = initial_state(spec);
        with_pool!(&app.store.db, pool => {
            sqlx::query(
                "INSERT INTO sync_schedules (connection, sync_name, variant, state, frequency_ms, next_run_at, created_at)
                 SELECT c.id, $2, 'base', $3, $4, $5, $5 FROM connections c WHERE c.provider_config_key = $1
                 ON CONFLICT (connection, sync_name, variant) DO NOTHING",
            )
            .bind(&function.integration)
            .bind(&function.name)
            .bind(state)
            .bind(frequency)
            .bind(now)
            .execute(pool)
            .await?;
            // A frequency set for one connection (`frequency_override`) outlives config changes.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE sync_schedules SET {RESCHEDULE}
                 WHERE sync_name = $2 AND frequency_ms <> $3 AND frequency_override IS NULL
                   AND connection IN (SELECT id FROM connections WHERE provider_config_key = $1)",
            )))
            .bind(&function.integration)
            .bind(&function.name)
            .bind(frequency)
            .bind(now)
            .execute(pool)
            .await?;
        });
    }
    Ok(())
}

/// The `SET` clause that puts frequency `$3` (ms) in force at time `$4`. A run waiting for its
/// time moves with the frequency (it is due one new period after the last run ended); a run that
/// is due, requested or in progress is left alone, and the end of a run reads the new frequency.
const RESCHEDULE: &str = "next_run_at = CASE WHEN next_run_at > $4 AND next_run_kind IS NULL
                                             THEN next_run_at - frequency_ms + $3 ELSE next_run_at END,
                          frequency_ms = $3";

/// Puts a per-connection frequency in force for one schedule, or with `None` the configured one
/// again.
pub async fn set_frequency(
    db: &Db,
    schedule: i64,
    frequency_ms: i64,
    frequency_override: Option<&str>,
) -> Result<(), StoreError> {
    with_pool!(db, pool => sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sync_schedules SET {RESCHEDULE}, frequency_override = $2 WHERE id = $1"
    )))
    .bind(schedule)
    .bind(frequency_override)
    .bind(frequency_ms)
    .bind(now_millis())
    .execute(pool)
    .await
    .map(|_| ())?);
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot remove the records: {0}")]
    Records(#[from] crate::records::RecordsError),
}

/// Removes what a deleted sync instance leaves behind: its checkpoint, and the records of its
/// models under its variant. A model another sync of the connection also writes under that
/// variant shares the dataset, so its records stay.
pub async fn remove_instance_data(
    app: &App,
    integration: &str,
    connection: i64,
    sync_name: &str,
    variant: &str,
) -> Result<(), CleanupError> {
    functions::save_checkpoint(&app.store.db, connection, &format!("sync:{sync_name}:{variant}"), None).await?;
    let config = app.config.current();
    let Some(function) = config.functions.get(integration, sync_name) else {
        tracing::warn!(
            sync = sync_name,
            variant,
            "the sync is no longer in the configuration, so its models are unknown: its records stay"
        );
        return Ok(());
    };
    let others: Vec<String> = with_pool!(&app.store.db, pool => sqlx::query_scalar(
        "SELECT sync_name FROM sync_schedules WHERE connection = $1 AND variant = $2 AND sync_name <> $3",
    )
    .bind(connection)
    .bind(variant)
    .bind(sync_name)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)?);
    let shared = |model: &String| {
        others.iter().any(|other| config.functions.get(integration, other).is_some_and(|f| f.models.contains(model)))
    };
    let records = crate::records::Records::new(app.store.db.clone());
    for model in function.models.iter().filter(|m| !shared(m)) {
        records.clear(&crate::records::Dataset::new(connection, model, Some(variant))).await?;
    }
    Ok(())
}

/// Marks RUNNING runs failed: all of them (`None`), or those whose heartbeat is older than the
/// given time.
async fn fail_runs(db: &Db, heartbeat_before: Option<i64>, reason: &str) -> Result<(), StoreError> {
    let now = now_millis();
    let failed = with_pool!(db, pool => sqlx::query(
        "UPDATE sync_runs SET status = 'FAILED', finished_at = $1, error = $2
         WHERE status = 'RUNNING' AND heartbeat_at < $3",
    )
    .bind(now)
    .bind(json!({ "type": "run_interrupted", "message": reason }).to_string())
    .bind(heartbeat_before.unwrap_or(i64::MAX))
    .execute(pool)
    .await?
    .rows_affected());
    if failed > 0 {
        tracing::warn!("{failed} sync run(s) marked failed: {reason}; they run again on schedule");
    }
    Ok(())
}

/// A run this node claimed.
#[derive(Debug)]
struct Claimed {
    run: i64,
    schedule: i64,
    provider_config_key: String,
    connection_id: String,
    sync_name: String,
    variant: String,
    full: bool,
    last_sync_date: Option<i64>,
    started_at: i64,
}

/// Claims up to `limit` due schedules, creating a RUNNING run for each.
async fn claim(app: &App, limit: i64) -> Result<Vec<Claimed>, StoreError> {
    let config = app.config.current();
    let now = now_millis();
    let select = |lock: &str| {
        format!(
            "SELECT s.id, c.provider_config_key, c.connection_id, s.sync_name, s.variant, s.next_run_kind, s.last_sync_date
             FROM sync_schedules s JOIN connections c ON c.id = s.connection
             WHERE (s.state = 'STARTED' OR s.next_run_kind IS NOT NULL) AND s.next_run_at <= $1
               AND NOT EXISTS (SELECT 1 FROM sync_runs r WHERE r.schedule = s.id AND r.status = 'RUNNING')
             ORDER BY s.next_run_at LIMIT $2{lock}"
        )
    };
    let claimed = with_pool!(&app.store.db, pool => {
        let mut tx = pool.begin_write().await?;
        let sql = if app.store.db.is_postgres() { select(" FOR UPDATE OF s SKIP LOCKED") } else { select("") };
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(limit).fetch_all(&mut *tx).await?;
        let mut claimed = Vec::new();
        for row in rows {
            let schedule: i64 = row.try_get(0)?;
            let provider_config_key: String = row.try_get(1)?;
            let sync_name: String = row.try_get(3)?;
            let next_kind: Option<String> = row.try_get(5)?;
            let last_sync_date: Option<i64> = row.try_get(6)?;
            let Some(function) = config.functions.get(&provider_config_key, &sync_name) else { continue };
            let incremental = function.sync.as_ref().is_some_and(|s| s.incremental);
            let full = next_kind.as_deref() == Some("FULL") || !incremental || last_sync_date.is_none();
            let run: Option<i64> = sqlx::query_scalar(
                "INSERT INTO sync_runs (schedule, kind, status, started_at, heartbeat_at) VALUES ($1, $2, 'RUNNING', $3, $3)
                 ON CONFLICT (schedule) WHERE status = 'RUNNING' DO NOTHING RETURNING id",
            )
            .bind(schedule)
            .bind(if full { "FULL" } else { "INCREMENTAL" })
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(run) = run else { continue };
            // A requested run (trigger) is taken; the next one is the schedule's again.
            sqlx::query("UPDATE sync_schedules SET next_run_kind = NULL WHERE id = $1")
                .bind(schedule)
                .execute(&mut *tx)
                .await?;
            claimed.push(Claimed {
                run,
                schedule,
                provider_config_key,
                connection_id: row.try_get(2)?,
                sync_name,
                variant: row.try_get(4)?,
                full,
                last_sync_date,
                started_at: now,
            });
        }
        tx.commit().await?;
        claimed
    });
    Ok(claimed)
}

async fn execute(app: &Arc<App>, claimed: Claimed) {
    let outcome = run_claimed(app, &claimed).await;
    match finish(&app.store.db, &claimed, &outcome).await {
        Ok(true) => notify(app, &claimed, &outcome).await,
        Ok(false) => forget_deleted(app, &claimed).await,
        Err(e) => {
            tracing::error!(run = claimed.run, "cannot record the end of a sync run: {e}");
            notify(app, &claimed, &outcome).await;
        }
    }
}

/// The sync instance was deleted while it ran (`DELETE /sync/:name/variant/:variant`): what the
/// run saved after the deletion removed the instance's records goes too, unless the instance
/// has been created again since.
async fn forget_deleted(app: &App, claimed: &Claimed) {
    let found: Result<Option<(i64, bool)>, sqlx::Error> = with_pool!(&app.store.db, pool => sqlx::query_as(
        "SELECT c.id, EXISTS (SELECT 1 FROM sync_schedules s
                              WHERE s.connection = c.id AND s.sync_name = $3 AND s.variant = $4)
         FROM connections c WHERE c.provider_config_key = $1 AND c.connection_id = $2",
    )
    .bind(&claimed.provider_config_key)
    .bind(&claimed.connection_id)
    .bind(&claimed.sync_name)
    .bind(&claimed.variant)
    .fetch_optional(pool)
    .await);
    let connection = match found {
        Ok(Some((connection, false))) => connection,
        Ok(_) => return,
        Err(e) => {
            tracing::error!(run = claimed.run, "cannot clean up after a deleted sync instance: {e}");
            return;
        }
    };
    tracing::info!(
        sync = %claimed.sync_name,
        variant = %claimed.variant,
        run = claimed.run,
        "the sync instance was deleted during the run; removing what the run saved"
    );
    let removed =
        remove_instance_data(app, &claimed.provider_config_key, connection, &claimed.sync_name, &claimed.variant).await;
    if let Err(e) = removed {
        tracing::error!(run = claimed.run, "cannot clean up after a deleted sync instance: {e}");
    }
}

/// Nango's sync webhooks, one per model; the webhook settings decide which are sent (changes
/// only, unless `on_sync_completion_always`; errors when `on_sync_error`).
async fn notify(app: &App, claimed: &Claimed, outcome: &Result<Changes, Value>) {
    let config = app.config.current();
    let models = config.functions.get(&claimed.provider_config_key, &claimed.sync_name).map(|f| f.models.clone());
    let connection = match app.store.connections.get(&claimed.provider_config_key, &claimed.connection_id).await {
        Ok(Some(connection)) => connection,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(run = claimed.run, "cannot read the connection to send sync webhooks: {e}");
            return;
        }
    };
    let started = iso(from_millis(claimed.started_at));
    for model in models.unwrap_or_default() {
        let mut payload = json!({
            "from": "nango",
            "type": "sync",
            "connectionId": claimed.connection_id,
            "providerConfigKey": claimed.provider_config_key,
            "syncName": claimed.sync_name,
            "syncVariant": claimed.variant,
            "model": model,
            // INITIAL when the run started without a last sync date (first run, or after a reset).
            "syncType": if claimed.last_sync_date.is_none() { "INITIAL" } else { "INCREMENTAL" },
        });
        match outcome {
            Ok(changes) => {
                let summary = changes.get(&model).copied().unwrap_or_default();
                payload["success"] = json!(true);
                payload["responseResults"] = json!(summary);
                payload["modifiedAfter"] = json!(started);
                payload["queryTimeStamp"] = json!(started);
            }
            Err(error) => {
                payload["success"] = json!(false);
                payload["error"] = json!({ "type": error["type"], "description": error["message"] });
                payload["startedAt"] = json!(started);
                payload["failedAt"] = json!(iso(chrono::Utc::now()));
            }
        }
        if let Err(e) = app.webhooks.enqueue(Event::for_connection(&connection, payload)).await {
            tracing::error!(run = claimed.run, "cannot queue a sync webhook: {e}");
        }
    }
}

/// Records the end of a run and when the schedule runs next; a success moves the incremental
/// starting point to the run's start, so changes made during the run are seen next time.
/// Returns false when the schedule no longer exists.
async fn finish(db: &Db, claimed: &Claimed, outcome: &Result<Changes, Value>) -> Result<bool, sqlx::Error> {
    let (status, results, error) = match outcome {
        Ok(results) => {
            let results: serde_json::Map<String, Value> = results.iter().map(|(m, s)| (m.clone(), json!(s))).collect();
            ("SUCCESS", Value::Object(results), None)
        }
        Err(error) => ("FAILED", json!({}), Some(error.to_string())),
    };
    let finished = now_millis();
    // Two statements, no transaction: should the second be lost, the sync only runs again.
    with_pool!(db, pool => {
        sqlx::query(
            "UPDATE sync_runs SET status = $2, finished_at = $3, results = $4, error = $5 WHERE id = $1 AND status = 'RUNNING'",
        )
        .bind(claimed.run)
        .bind(status)
        .bind(finished)
        .bind(results.to_string())
        .bind(error)
        .execute(pool)
        .await?;
        // A trigger during the run moved next_run_at past the run's start: keep it.
        sqlx::query(
            "UPDATE sync_schedules SET
                 next_run_at = CASE WHEN next_run_at <= $2 THEN $3 + frequency_ms ELSE next_run_at END,
                 last_sync_date = CASE WHEN $4 THEN $2 ELSE last_sync_date END
             WHERE id = $1",
        )
        .bind(claimed.schedule)
        .bind(claimed.started_at)
        .bind(finished)
        .bind(status == "SUCCESS")
        .execute(pool)
        .await
        .map(|done| done.rows_affected() > 0)
    })
}

type Changes = IndexMap<String, crate::records::Summary>;

/// Runs the claimed sync with a heartbeat; returns the changes per model or the error.
async fn run_claimed(app: &Arc<App>, claimed: &Claimed) -> Result<Changes, Value> {
    let config = app.config.current();
    let failure = |kind: &str, message: String| json!({ "type": kind, "message": message });
    let function: Arc<Function> = config
        .functions
        .get(&claimed.provider_config_key, &claimed.sync_name)
        .cloned()
        .ok_or_else(|| failure("unknown_sync", "the sync is no longer in the configuration".into()))?;
    let connection = app
        .store
        .connections
        .get(&claimed.provider_config_key, &claimed.connection_id)
        .await
        .map_err(|e| failure("internal_error", format!("cannot read the connection: {e}")))?
        .ok_or_else(|| failure("unknown_connection", "the connection no longer exists".into()))?;
    let run = SyncRun {
        id: claimed.run,
        variant: claimed.variant.clone(),
        last_sync_date: if claimed.full { None } else { claimed.last_sync_date },
    };
    let connection_key = connection.id;
    let context = Context {
        paginate: functions::api::paginate_hints(&config, &connection),
        function: Arc::clone(&function),
        connection,
        input: Value::Null,
        run: Some(run.clone()),
        save: true,
        limits: Limits::from_env(),
    };
    tracing::info!(
        sync = %claimed.sync_name,
        connection = %claimed.connection_id,
        run = claimed.run,
        kind = if claimed.full { "full" } else { "incremental" },
        "sync run started"
    );
    let heartbeat = tokio::spawn(heartbeat(format!("sync run {}", claimed.run), {
        let (db, run) = (app.store.db.clone(), claimed.run);
        move || {
            let db = db.clone();
            async move {
                with_pool!(&db, pool => sqlx::query("UPDATE sync_runs SET heartbeat_at = $2 WHERE id = $1 AND status = 'RUNNING'")
                    .bind(run)
                    .bind(now_millis())
                    .execute(pool)
                    .await
                    .map(|_| ()))
            }
        }
    }));
    let finished = functions::invoke(Arc::clone(app), context).await;
    let mut results = finished.results;
    let outcome = match finished.result {
        Ok(_) => {
            if claimed.full && function.sync.as_ref().is_some_and(|s| s.track_deletes) {
                for (model, deleted) in functions::run::delete_unseen(app, connection_key, &function.models, &run).await
                {
                    results.entry(model).or_default().deleted += deleted;
                }
            }
            Ok(results)
        }
        Err(e) => Err(e.failure().to_json()),
    };
    heartbeat.abort();
    match &outcome {
        Ok(results) => tracing::info!(sync = %claimed.sync_name, run = claimed.run, ?results, "sync run succeeded"),
        Err(e) => tracing::warn!(sync = %claimed.sync_name, run = claimed.run, "sync run failed: {e}"),
    }
    outcome
}

/// Renews a lease with `beat` until the task running this is aborted.
pub async fn heartbeat<F, Fut>(what: String, beat: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), sqlx::Error>>,
{
    // Three beats per staleness window, at most one every 5 seconds.
    let every = Duration::from_millis((stale_after() / 3).clamp(100, 5_000) as u64);
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if let Err(e) = beat().await {
            tracing::warn!("cannot record the heartbeat of {what}: {e}");
        }
    }
}

/// Runs one sync for one connection now, as a recorded run (`latchkey run --save`).
pub async fn run_now(
    app: &Arc<App>,
    integration: &str,
    sync_name: &str,
    connection_id: &str,
) -> Result<Changes, Value> {
    let failure = |kind: &str, message: String| json!({ "type": kind, "message": message });
    let internal = |e: StoreError| failure("internal_error", e.to_string());
    ensure_schedules(app, Some(integration)).await.map_err(internal)?;
    let now = now_millis();
    let row: Option<(i64, String, Option<i64>)> = with_pool!(&app.store.db, pool => sqlx::query_as(
        "SELECT s.id, s.variant, s.last_sync_date FROM sync_schedules s JOIN connections c ON c.id = s.connection
         WHERE c.provider_config_key = $1 AND c.connection_id = $2 AND s.sync_name = $3 AND s.variant = 'base'",
    )
    .bind(integration)
    .bind(connection_id)
    .bind(sync_name)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)
    .map_err(internal)?);
    let (schedule, variant, last_sync_date) =
        row.ok_or_else(|| failure("unknown_sync", format!("no sync `{sync_name}` for connection `{connection_id}`")))?;
    let config = app.config.current();
    let incremental =
        config.functions.get(integration, sync_name).and_then(|f| f.sync.as_ref()).is_some_and(|s| s.incremental);
    let full = !incremental || last_sync_date.is_none();
    let run: Option<i64> = with_pool!(&app.store.db, pool => sqlx::query_scalar(
        "INSERT INTO sync_runs (schedule, kind, status, started_at, heartbeat_at) VALUES ($1, $2, 'RUNNING', $3, $3)
         ON CONFLICT (schedule) WHERE status = 'RUNNING' DO NOTHING RETURNING id",
    )
    .bind(schedule)
    .bind(if full { "FULL" } else { "INCREMENTAL" })
    .bind(now)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)
    .map_err(internal)?);
    let run = run.ok_or_else(|| failure("sync_running", "a run of this sync is in progress".into()))?;
    let claimed = Claimed {
        run,
        schedule,
        provider_config_key: integration.to_string(),
        connection_id: connection_id.to_string(),
        sync_name: sync_name.to_string(),
        variant,
        full,
        last_sync_date,
        started_at: now,
    };
    let outcome = run_claimed(app, &claimed).await;
    if let Err(e) = finish(&app.store.db, &claimed, &outcome).await {
        tracing::error!(run, "cannot record the end of a sync run: {e}");
    }
    outcome
}
