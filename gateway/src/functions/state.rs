//! What a function keeps between runs: the connection's metadata and its checkpoint.

use serde_json::{Map, Value};

use super::run::Context;
use crate::app::App;
use crate::store::StoreError;
use crate::time::now_millis;
use crate::with_pool;

pub async fn metadata(app: &App, context: &Context) -> Result<Option<Map<String, Value>>, StoreError> {
    let connection = &context.connection;
    let fresh = app.store.connections.read(&connection.provider_config_key, &connection.connection_id).await?;
    Ok(fresh.and_then(|c| c.metadata))
}

pub async fn set_metadata(
    app: &App,
    context: &Context,
    metadata: &Map<String, Value>,
    merge: bool,
) -> Result<(), StoreError> {
    let connection = &context.connection;
    app.store
        .connections
        .set_metadata(&connection.provider_config_key, std::slice::from_ref(&connection.connection_id), metadata, merge)
        .await?;
    Ok(())
}

pub async fn checkpoint(app: &App, context: &Context) -> Result<Value, StoreError> {
    let text: Option<String> = with_pool!(&app.store.db, pool => sqlx::query_scalar(
        "SELECT value FROM function_checkpoints WHERE connection = $1 AND key = $2",
    )
    .bind(context.connection.id)
    .bind(context.checkpoint_key())
    .fetch_optional(pool)
    .await?);
    Ok(match text {
        Some(text) => serde_json::from_str(&text)?,
        None => Value::Null,
    })
}

/// Saves the checkpoint, or clears it with `None`.
pub async fn save_checkpoint(
    app: &App,
    context: &Context,
    value: Option<&Map<String, Value>>,
) -> Result<(), StoreError> {
    let key = context.checkpoint_key();
    clear_or_save(&app.store.db, context.connection.id, &key, value).await
}

/// Used by a full resync too, which starts over without a checkpoint.
pub async fn clear_or_save(
    db: &crate::store::Db,
    connection: i64,
    key: &str,
    value: Option<&Map<String, Value>>,
) -> Result<(), StoreError> {
    with_pool!(db, pool => match value {
        Some(value) => sqlx::query(
            "INSERT INTO function_checkpoints (connection, key, value, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (connection, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(connection)
        .bind(key)
        .bind(Value::Object(value.clone()).to_string())
        .bind(now_millis())
        .execute(pool)
        .await
        .map(|_| ())?,
        None => sqlx::query("DELETE FROM function_checkpoints WHERE connection = $1 AND key = $2")
            .bind(connection)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ())?,
    });
    Ok(())
}
