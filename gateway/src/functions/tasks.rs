//! Async actions as durable tasks. `POST /action/trigger` with `X-Async` stores the task (its
//! input, connection and retry budget) before it answers 202; the node that accepted it starts
//! it at once, and the scheduler of every node claims the tasks that are due: a retry whose
//! back-off has passed, or a task whose start was lost. An attempt holds a lease that heartbeats
//! renew, so when its node stops the attempt counts and the task runs again while retries are
//! left, or else fails with `the node running it stopped`. `GET /action/:id` reads the task on
//! any node; finished tasks are pruned after `LATCHKEY_ACTION_RESULTS_RETENTION`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Row;

use super::api::{action_context, find};
use super::catalog::Kind;
use super::invoke;
use crate::app::App;
use crate::connection::Connection;
use crate::store::{Db, StoreError};
use crate::time::now_millis;
use crate::webhooks::Event;
use crate::with_pool;

/// Attempts each node runs at once from its scheduler (an action started by the node that
/// accepted it does not wait for one of these).
pub const CONCURRENT_ATTEMPTS: usize = 4;

/// How long a finished task's result stays readable (`LATCHKEY_ACTION_RESULTS_RETENTION`, a
/// duration such as `7d` or `12h`; `0s` keeps them forever).
fn retention() -> Duration {
    const DEFAULT: Duration = Duration::from_secs(7 * 86_400);
    match std::env::var("LATCHKEY_ACTION_RESULTS_RETENTION") {
        Ok(text) => crate::time::parse_duration(&text).unwrap_or_else(|| {
            tracing::warn!("LATCHKEY_ACTION_RESULTS_RETENTION `{text}` is not a duration such as 7d; keeping 7 days");
            DEFAULT
        }),
        Err(_) => DEFAULT,
    }
}

/// The error of a task whose node stopped during its last attempt.
const NODE_STOPPED: &str = "the node running it stopped";

/// Stores a new task, due now.
pub async fn enqueue(
    db: &Db,
    id: &str,
    connection: i64,
    action_name: &str,
    input: &Value,
    max_retries: u32,
) -> Result<(), StoreError> {
    let now = now_millis();
    with_pool!(db, pool => sqlx::query(
        "INSERT INTO action_runs (id, connection, action_name, status, input, attempts, max_retries, next_attempt_at,
                                  created_at, updated_at)
         VALUES ($1, $2, $3, 'PENDING', $4, 0, $5, $6, $6, $6)",
    )
    .bind(id)
    .bind(connection)
    .bind(action_name)
    .bind(input.to_string())
    .bind(i64::from(max_retries))
    .bind(now)
    .execute(pool)
    .await
    .map(|_| ())?);
    Ok(())
}

/// An attempt this node claimed. `attempt` (1 for the first) fences it: a node whose lease was
/// taken over cannot record anything for the task any more.
struct Claimed {
    id: String,
    attempt: i64,
    max_retries: i64,
    action_name: String,
    input: Value,
    connection: i64,
}

enum Which<'a> {
    One(&'a str),
    Due { limit: i64 },
}

/// Starts an attempt of each chosen task that is waiting, marking it RUNNING with a fresh lease.
async fn claim(db: &Db, which: Which<'_>) -> Result<Vec<Claimed>, StoreError> {
    let now = now_millis();
    let chosen = match which {
        Which::One(_) => "id = $2".to_string(),
        Which::Due { .. } => format!(
            "id IN (SELECT id FROM action_runs WHERE status = 'PENDING' AND next_attempt_at <= $1
                    ORDER BY next_attempt_at LIMIT $2{})",
            if db.is_postgres() { " FOR UPDATE SKIP LOCKED" } else { "" }
        ),
    };
    // The outer status test is checked again on PostgreSQL after waiting for a row lock.
    let sql = format!(
        "UPDATE action_runs SET status = 'RUNNING', attempts = attempts + 1, heartbeat_at = $1, updated_at = $1
         WHERE status = 'PENDING' AND {chosen}
         RETURNING id, attempts, max_retries, action_name, input, connection"
    );
    let rows = with_pool!(db, pool => {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        let query = match which {
            Which::One(id) => query.bind(id.to_string()),
            Which::Due { limit } => query.bind(limit),
        };
        query
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| {
                let input: String = row.try_get(4)?;
                Ok(Claimed {
                    id: row.try_get(0)?,
                    attempt: row.try_get(1)?,
                    max_retries: row.try_get(2)?,
                    action_name: row.try_get(3)?,
                    input: serde_json::from_str(&input)?,
                    connection: row.try_get(5)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?
    });
    Ok(rows)
}

/// Runs the task the trigger just stored, unless another node's scheduler already took it.
pub async fn start(app: Arc<App>, id: String) {
    match claim(&app.store.db, Which::One(&id)).await {
        Ok(claimed) => {
            for task in claimed {
                execute(&app, task).await;
            }
        }
        Err(e) => tracing::warn!(id = %id, "cannot start async action now, the scheduler will: {e}"),
    }
}

/// One scheduler tick: takes up the tasks whose node stopped (PostgreSQL; SQLite does it at
/// start) and starts the attempts that are due, as many as there are free permits.
pub async fn tick(app: &Arc<App>, permits: &Arc<tokio::sync::Semaphore>) -> Result<(), StoreError> {
    if app.store.db.is_postgres() {
        take_over(app, now_millis() - crate::scheduler::stale_after()).await?;
    }
    let free = permits.available_permits();
    if free == 0 {
        return Ok(());
    }
    for task in claim(&app.store.db, Which::Due { limit: free as i64 }).await? {
        let Ok(permit) = Arc::clone(permits).acquire_owned().await else { break };
        let app = Arc::clone(app);
        tokio::spawn(async move {
            execute(&app, task).await;
            drop(permit);
        });
    }
    Ok(())
}

/// Tasks RUNNING with a heartbeat older than `heartbeat_before` were cut short with their node:
/// the attempt counts, and the task waits for its next one if retries are left, else it fails.
pub async fn take_over(app: &App, heartbeat_before: i64) -> Result<(), StoreError> {
    let now = now_millis();
    let error = json!({ "type": "action_interrupted", "message": NODE_STOPPED }).to_string();
    let (again, failed): (u64, Vec<(String, i64)>) = with_pool!(&app.store.db, pool => {
        let again = sqlx::query(
            "UPDATE action_runs SET status = 'PENDING', next_attempt_at = $2, updated_at = $2
             WHERE status = 'RUNNING' AND heartbeat_at < $1 AND attempts <= max_retries",
        )
        .bind(heartbeat_before)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected();
        let failed = sqlx::query_as(
            "UPDATE action_runs SET status = 'FAILED', output = $3, finished_at = $2, updated_at = $2
             WHERE status = 'RUNNING' AND heartbeat_at < $1
             RETURNING id, connection",
        )
        .bind(heartbeat_before)
        .bind(now)
        .bind(&error)
        .fetch_all(pool)
        .await?;
        (again, failed)
    });
    if again > 0 {
        tracing::warn!("{again} async action(s) whose node stopped during an attempt run again");
    }
    for (id, connection) in failed {
        tracing::warn!(id = %id, "async action failed: {NODE_STOPPED} and its retries are spent");
        notify(app, connection, &id).await;
    }
    Ok(())
}

/// Deletes the tasks that finished longer ago than the retention.
pub async fn prune(db: &Db) {
    let keep = retention();
    if keep.is_zero() {
        return;
    }
    let before = now_millis() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let pruned = with_pool!(db, pool => sqlx::query("DELETE FROM action_runs WHERE finished_at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()));
    match pruned {
        Ok(0) => {}
        Ok(n) => tracing::info!("pruned {n} async action results older than {keep:?}"),
        Err(e) => tracing::warn!("cannot prune async action results: {e}"),
    }
}

async fn connection_of(app: &App, connection: i64) -> Result<Option<Arc<Connection>>, StoreError> {
    let keys: Option<(String, String)> = with_pool!(&app.store.db, pool => sqlx::query_as(
        "SELECT provider_config_key, connection_id FROM connections WHERE id = $1",
    )
    .bind(connection)
    .fetch_optional(pool)
    .await?);
    match keys {
        Some((provider_config_key, connection_id)) => {
            app.store.connections.get(&provider_config_key, &connection_id).await
        }
        None => Ok(None),
    }
}

/// Runs one attempt under a lease and records what follows: a retry after a back-off, or the
/// result (then the webhook).
async fn execute(app: &Arc<App>, task: Claimed) {
    let heartbeat = tokio::spawn(crate::scheduler::heartbeat(format!("async action {}", task.id), {
        let (db, id, attempt) = (app.store.db.clone(), task.id.clone(), task.attempt);
        move || {
            let (db, id) = (db.clone(), id.clone());
            async move {
                with_pool!(&db, pool => sqlx::query(
                    "UPDATE action_runs SET heartbeat_at = $3 WHERE id = $1 AND attempts = $2 AND status = 'RUNNING'",
                )
                .bind(id)
                .bind(attempt)
                .bind(now_millis())
                .execute(pool)
                .await
                .map(|_| ()))
            }
        }
    }));
    let outcome = attempt(app, &task).await;
    heartbeat.abort();
    let now = now_millis();
    let recorded = match &outcome {
        Err(error) if task.attempt <= task.max_retries => {
            let retry = u32::try_from(task.attempt).unwrap_or(u32::MAX);
            let wait = crate::proxy::retry::backoff(retry);
            tracing::warn!(
                action = %task.action_name,
                id = %task.id,
                "async action failed ({}); retry {retry} of {} in {wait:?}",
                error["message"].as_str().unwrap_or("no message"),
                task.max_retries
            );
            let due = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
            with_pool!(&app.store.db, pool => sqlx::query(
                "UPDATE action_runs SET status = 'PENDING', next_attempt_at = $3, updated_at = $4
                 WHERE id = $1 AND attempts = $2 AND status = 'RUNNING'",
            )
            .bind(&task.id)
            .bind(task.attempt)
            .bind(due)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| false))
        }
        _ => {
            let (status, output) = match &outcome {
                Ok(output) => ("SUCCESS", output),
                Err(error) => ("FAILED", error),
            };
            with_pool!(&app.store.db, pool => sqlx::query(
                "UPDATE action_runs SET status = $3, output = $4, finished_at = $5, updated_at = $5
                 WHERE id = $1 AND attempts = $2 AND status = 'RUNNING'",
            )
            .bind(&task.id)
            .bind(task.attempt)
            .bind(status)
            .bind(output.to_string())
            .bind(now)
            .execute(pool)
            .await
            .map(|done| done.rows_affected() > 0))
        }
    };
    match recorded {
        Ok(true) => notify(app, task.connection, &task.id).await,
        Ok(false) => {}
        Err(e) => tracing::error!(id = %task.id, "cannot record the outcome of an async action's attempt: {e}"),
    }
}

/// One attempt: the output, or the error as `GET /action/:id` reports it.
async fn attempt(app: &Arc<App>, task: &Claimed) -> Result<Value, Value> {
    let failure = |kind: &str, message: String| json!({ "type": kind, "message": message });
    let connection = connection_of(app, task.connection)
        .await
        .map_err(|e| failure("internal_error", format!("cannot read the connection: {e}")))?
        .ok_or_else(|| failure("unknown_connection", "the connection no longer exists".into()))?;
    let config = app.config.current();
    let function = find(&config, &connection.provider_config_key, &task.action_name, Kind::Action)
        .map_err(|_| failure("unknown_action", "the action is no longer in the configuration".into()))?;
    let context = action_context(&config, function, connection, task.input.clone());
    invoke(Arc::clone(app), context).await.result.map_err(|e| e.failure().to_json())
}

/// Nango's `async_action` webhook: the task has finished, its result is ready.
async fn notify(app: &App, connection: i64, id: &str) {
    let connection = match connection_of(app, connection).await {
        Ok(Some(connection)) => connection,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(id, "cannot read the connection to send the async action webhook: {e}");
            return;
        }
    };
    let payload = json!({
        "type": "async_action",
        "from": "nango",
        "connectionId": connection.connection_id,
        "providerConfigKey": connection.provider_config_key,
        "payload": { "id": id, "statusUrl": format!("/action/{id}") },
    });
    if let Err(e) = app.webhooks.enqueue(Event::for_connection(&connection, payload)).await {
        tracing::error!(id, "cannot queue the webhook of async action: {e}");
    }
}
