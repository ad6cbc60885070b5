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
use crate::store::{Db, StoreError, Tx};
use crate::time::now_millis;
use crate::webhooks::{Event, Webhooks};
use crate::{with_pool, with_tx};

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
/// the attempt counts, and the task waits for its next one if retries are left, else it fails
/// (its webhook queued in the same transaction).
pub async fn take_over(app: &App, heartbeat_before: i64) -> Result<(), StoreError> {
    let now = now_millis();
    let error = json!({ "type": "action_interrupted", "message": NODE_STOPPED }).to_string();
    let mut tx = app.store.db.begin_write().await?;
    let (again, failed): (u64, Vec<(String, i64)>) = with_tx!(&mut tx, conn => {
        let again = sqlx::query(
            "UPDATE action_runs SET status = 'PENDING', next_attempt_at = $2, updated_at = $2
             WHERE status = 'RUNNING' AND heartbeat_at < $1 AND attempts <= max_retries",
        )
        .bind(heartbeat_before)
        .bind(now)
        .execute(&mut *conn)
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
        .fetch_all(&mut *conn)
        .await?;
        (again, failed)
    });
    let mut queued = 0;
    for (id, connection) in &failed {
        queued += queue_webhook(&app.webhooks, &mut tx, *connection, id).await?;
    }
    tx.commit().await?;
    if queued > 0 {
        app.webhooks.wake();
    }
    if again > 0 {
        tracing::warn!("{again} async action(s) whose node stopped during an attempt run again");
    }
    for (id, _) in failed {
        tracing::warn!(id = %id, "async action failed: {NODE_STOPPED} and its retries are spent");
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
/// result with its webhook.
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
            let now = now_millis();
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
            .map(|_| ())
            .map_err(StoreError::from))
        }
        Ok(output) => finish(&app.store.db, &app.webhooks, &task, "SUCCESS", output).await,
        Err(error) => finish(&app.store.db, &app.webhooks, &task, "FAILED", error).await,
    };
    if let Err(e) = recorded {
        tracing::error!(id = %task.id, "cannot record the outcome of an async action's attempt: {e}");
    }
}

/// Records the result of the task's attempt and queues its `async_action` webhook in one
/// transaction: a node that stops in between leaves neither, and the task is taken over like
/// any cut short. An attempt fenced out (its task taken over meanwhile) records and queues
/// nothing.
async fn finish(db: &Db, webhooks: &Webhooks, task: &Claimed, status: &str, output: &Value) -> Result<(), StoreError> {
    let now = now_millis();
    let mut tx = db.begin_write().await?;
    let recorded: Option<i64> = with_tx!(&mut tx, conn => sqlx::query_scalar(
        "UPDATE action_runs SET status = $3, output = $4, finished_at = $5, updated_at = $5
         WHERE id = $1 AND attempts = $2 AND status = 'RUNNING'
         RETURNING connection",
    )
    .bind(&task.id)
    .bind(task.attempt)
    .bind(status)
    .bind(output.to_string())
    .bind(now)
    .fetch_optional(conn)
    .await?);
    let Some(connection) = recorded else {
        tracing::warn!(id = %task.id, attempt = task.attempt, "async action attempt finished after it was taken over; its result is dropped");
        return Ok(());
    };
    let queued = queue_webhook(webhooks, &mut tx, connection, &task.id).await?;
    tx.commit().await?;
    if queued > 0 {
        webhooks.wake();
    }
    Ok(())
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

/// Queues Nango's `async_action` webhook (the task has finished, its result is ready) in `tx`,
/// the transaction that records the result; returns how many deliveries.
async fn queue_webhook(webhooks: &Webhooks, tx: &mut Tx, connection: i64, id: &str) -> Result<usize, StoreError> {
    let keys: Option<(String, String, Option<String>)> = with_tx!(tx, conn => sqlx::query_as(
        "SELECT provider_config_key, connection_id, webhook_url_override FROM connections WHERE id = $1",
    )
    .bind(connection)
    .fetch_optional(conn)
    .await?);
    let Some((provider_config_key, connection_id, url_override)) = keys else { return Ok(0) };
    let payload = json!({
        "type": "async_action",
        "from": "nango",
        "connectionId": connection_id,
        "providerConfigKey": provider_config_key,
        "payload": { "id": id, "statusUrl": format!("/action/{id}") },
    });
    let event = Event {
        payload,
        provider_config_key: Some(provider_config_key),
        connection_id: Some(connection_id),
        url_override,
    };
    webhooks.enqueue_in(tx, event).await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{Config, ConfigHandle, LoadOptions};
    use crate::secret::Secret;
    use crate::store::scratch;

    /// Webhooks to one URL; nothing sends them, they are only stored.
    fn webhooks(db: &Db) -> Arc<Webhooks> {
        let mut config = Config::empty();
        config.webhooks.urls = vec!["http://127.0.0.1:9/hooks".into()];
        let options = LoadOptions { config_path: PathBuf::new(), config_required: false, catalog_dir: None };
        Webhooks::new(db.clone(), Arc::new(ConfigHandle::with(config, options)), Secret::new("test-key"))
    }

    /// A task stored as the trigger stores it, and its first attempt started.
    async fn started(db: &Db, connection: i64, id: &str) -> Claimed {
        enqueue(db, id, connection, "act", &json!({}), 0).await.unwrap();
        claim(db, Which::One(id)).await.unwrap().pop().unwrap()
    }

    /// The task's status and output, and the bodies of the stored webhook deliveries.
    async fn stored(db: &Db, id: &str) -> (String, Option<String>, Vec<String>) {
        with_pool!(db, pool => {
            let (status, output) = sqlx::query_as("SELECT status, output FROM action_runs WHERE id = $1")
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap();
            let bodies = sqlx::query_scalar("SELECT body FROM webhook_deliveries ORDER BY id").fetch_all(pool).await.unwrap();
            (status, output, bodies)
        })
    }

    /// Makes every insert into webhook_deliveries fail, or stops doing so.
    async fn refuse_deliveries(db: &Db, refuse: bool) {
        let sql = match (db, refuse) {
            (Db::Sqlite(_), true) => {
                "CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries BEGIN SELECT RAISE(ABORT, 'refused'); END"
            }
            (Db::Sqlite(_), false) => "DROP TRIGGER refuse",
            (Db::Postgres(_), true) => {
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
                 CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries FOR EACH ROW EXECUTE FUNCTION refuse()"
            }
            (Db::Postgres(_), false) => "DROP TRIGGER refuse ON webhook_deliveries",
        };
        with_pool!(db, pool => {
            sqlx::raw_sql(sql).execute(pool).await.unwrap();
        });
    }

    #[tokio::test]
    async fn a_result_commits_with_its_webhook_or_not_at_all() {
        for (db, _scratch) in scratch::databases().await {
            let connection = scratch::connection(&db, "github", "octo").await;
            let hooks = webhooks(&db);
            let task = started(&db, connection, "t1").await;

            refuse_deliveries(&db, true).await;
            assert!(finish(&db, &hooks, &task, "SUCCESS", &json!({ "n": 1 })).await.is_err());
            assert_eq!(stored(&db, "t1").await, ("RUNNING".into(), None, vec![]), "no result without its webhook");

            refuse_deliveries(&db, false).await;
            finish(&db, &hooks, &task, "SUCCESS", &json!({ "n": 1 })).await.unwrap();
            let (status, output, bodies) = stored(&db, "t1").await;
            assert_eq!((status.as_str(), output.as_deref()), ("SUCCESS", Some(r#"{"n":1}"#)));
            assert_eq!(bodies.len(), 1);
            let body: Value = serde_json::from_str(&bodies[0]).unwrap();
            assert_eq!(body["type"], "async_action");
            assert_eq!(body["connectionId"], "octo");
            assert_eq!(body["payload"], json!({ "id": "t1", "statusUrl": "/action/t1" }));
        }
    }

    #[tokio::test]
    async fn an_attempt_taken_over_records_nothing_and_queues_no_webhook() {
        for (db, _scratch) in scratch::databases().await {
            let connection = scratch::connection(&db, "github", "octo").await;
            let hooks = webhooks(&db);
            let first = started(&db, connection, "t2").await;
            // Another node took the task over and started its next attempt.
            with_pool!(&db, pool => {
                sqlx::query("UPDATE action_runs SET status = 'PENDING' WHERE id = 't2'").execute(pool).await.unwrap();
            });
            let second = claim(&db, Which::One("t2")).await.unwrap().pop().unwrap();
            assert_eq!(second.attempt, 2);

            finish(&db, &hooks, &first, "FAILED", &json!({ "message": "late" })).await.unwrap();
            assert_eq!(stored(&db, "t2").await, ("RUNNING".into(), None, vec![]));

            finish(&db, &hooks, &second, "SUCCESS", &json!(2)).await.unwrap();
            let (status, output, bodies) = stored(&db, "t2").await;
            assert_eq!((status.as_str(), output.as_deref(), bodies.len()), ("SUCCESS", Some("2"), 1));
        }
    }
}
