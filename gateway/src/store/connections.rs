//! Connections and their sealed credentials, with an in-memory cache in front: the proxy reads
//! a connection on every request, and a cached copy saves the query and the decryption. Every
//! write drops the cached copy here and, on PostgreSQL, on the other nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use serde_json::{Map, Value};
use sqlx::QueryBuilder;

use super::{announce, BeginWrite, Change, Db, KeyRing, Sealed, StoreError};
use crate::connection::{Connection, Credentials, EndUser};
use crate::time::{from_millis, now_millis};
use crate::with_pool;

/// A connection to create or to replace.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub provider_config_key: String,
    pub connection_id: String,
    pub provider: String,
    pub credentials: Credentials,
    pub connection_config: Map<String, Value>,
    pub metadata: Option<Map<String, Value>>,
    pub tags: BTreeMap<String, String>,
    pub end_user: Option<EndUser>,
    pub webhook_url_override: Option<String>,
}

/// Whether an upsert created the connection or replaced an existing one (Nango's operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Creation,
    Override,
}

/// Filters of `GET /connections`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub connection_id: Option<String>,
    pub search: Option<String>,
    pub end_user_id: Option<String>,
    pub end_user_organization_id: Option<String>,
    pub integrations: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub limit: i64,
    pub page: i64,
}

/// A partial update of a connection's end user, tags and webhook URL (`PATCH`).
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub end_user: Option<EndUser>,
    pub tags: Option<BTreeMap<String, String>>,
    /// `Some(None)` clears it.
    pub webhook_url_override: Option<Option<String>>,
}

type Key = (String, String);

pub struct Connections {
    db: Db,
    keys: Arc<KeyRing>,
    cache: Cache<Key, Arc<Connection>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    provider_config_key: String,
    connection_id: String,
    provider: String,
    credentials: Vec<u8>,
    credentials_nonce: Vec<u8>,
    credentials_key_id: String,
    connection_config: String,
    metadata: Option<String>,
    end_user: Option<String>,
    webhook_url_override: Option<String>,
    created_at: i64,
    updated_at: i64,
    last_fetched_at: Option<i64>,
}

const COLUMNS: &str = "c.id, c.provider_config_key, c.connection_id, c.provider, c.credentials, c.credentials_nonce,
    c.credentials_key_id, c.connection_config, c.metadata, c.end_user, c.webhook_url_override, c.created_at,
    c.updated_at, c.last_fetched_at";

impl Connections {
    pub(super) fn new(db: Db, keys: Arc<KeyRing>) -> Connections {
        let cache = Cache::builder()
            .max_capacity(100_000)
            // A bound on staleness should a change notice from another node ever be missed.
            .time_to_live(Duration::from_secs(300))
            .build();
        Connections { db, keys, cache }
    }

    /// The connection, from the cache when it is there.
    pub async fn get(
        &self,
        provider_config_key: &str,
        connection_id: &str,
    ) -> Result<Option<Arc<Connection>>, StoreError> {
        let key = (provider_config_key.to_string(), connection_id.to_string());
        if let Some(hit) = self.cache.get(&key) {
            return Ok(Some(hit));
        }
        let Some(connection) = self.read(provider_config_key, connection_id).await? else { return Ok(None) };
        let connection = Arc::new(connection);
        self.cache.insert(key, Arc::clone(&connection));
        Ok(Some(connection))
    }

    /// The connection as stored now, bypassing the cache.
    pub async fn read(&self, provider_config_key: &str, connection_id: &str) -> Result<Option<Connection>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM connections c WHERE c.provider_config_key = $1 AND c.connection_id = $2"
        ));
        let row: Option<Row> = with_pool!(&self.db, pool => {
            sqlx::query_as(sql).bind(provider_config_key).bind(connection_id).fetch_optional(pool).await?
        });
        match row {
            Some(row) => {
                let tags = self.tags_of(&[row.id]).await?.remove(&row.id).unwrap_or_default();
                Ok(Some(self.decode(row, tags)?))
            }
            None => Ok(None),
        }
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Connection>, StoreError> {
        let rows: Vec<Row> = with_pool!(&self.db, pool => {
            let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM connections c WHERE 1 = 1"));
            if let Some(id) = &filter.connection_id {
                q.push(" AND c.connection_id = ").push_bind(id);
            }
            if let Some(search) = &filter.search {
                let pattern = format!("%{}%", search.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
                q.push(" AND (LOWER(c.connection_id) LIKE ").push_bind(pattern.clone()).push(" ESCAPE '\\'");
                q.push(" OR EXISTS (SELECT 1 FROM connection_tags t WHERE t.connection = c.id")
                    .push(" AND t.key IN ('end_user_display_name', 'end_user_email') AND LOWER(t.value) LIKE ")
                    .push_bind(pattern)
                    .push(" ESCAPE '\\'))");
            }
            if let Some(id) = &filter.end_user_id {
                q.push(" AND c.end_user_id = ").push_bind(id);
            }
            if let Some(id) = &filter.end_user_organization_id {
                q.push(" AND c.end_user_organization_id = ").push_bind(id);
            }
            if !filter.integrations.is_empty() {
                q.push(" AND c.provider_config_key IN (");
                let mut list = q.separated(", ");
                for key in &filter.integrations {
                    list.push_bind(key);
                }
                q.push(")");
            }
            for (k, v) in &filter.tags {
                q.push(" AND EXISTS (SELECT 1 FROM connection_tags t WHERE t.connection = c.id AND t.key = ")
                    .push_bind(k)
                    .push(" AND t.value = ")
                    .push_bind(v)
                    .push(")");
            }
            q.push(" ORDER BY c.created_at DESC, c.id DESC LIMIT ")
                .push_bind(filter.limit)
                .push(" OFFSET ")
                .push_bind(filter.page * filter.limit);
            q.build_query_as().fetch_all(pool).await?
        });
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut tags = self.tags_of(&ids).await?;
        rows.into_iter()
            .map(|row| {
                let t = tags.remove(&row.id).unwrap_or_default();
                self.decode(row, t)
            })
            .collect()
    }

    /// Creates the connection, or replaces the one with the same key.
    pub async fn upsert(&self, new: &NewConnection) -> Result<(Arc<Connection>, Upserted), StoreError> {
        let sealed = self.seal(&new.credentials)?;
        let now = now_millis();
        let end_user = new.end_user.as_ref().map(serde_json::to_string).transpose()?;
        let metadata = new.metadata.as_ref().map(|m| Value::Object(m.clone()).to_string());
        let upserted = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let existing: Option<i64> =
                sqlx::query_scalar("SELECT id FROM connections WHERE provider_config_key = $1 AND connection_id = $2")
                    .bind(&new.provider_config_key)
                    .bind(&new.connection_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO connections (provider_config_key, connection_id, provider, credentials, credentials_nonce,
                    credentials_key_id, credentials_expires_at, connection_config, metadata, end_user, end_user_id,
                    end_user_organization_id, webhook_url_override, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
                 ON CONFLICT (provider_config_key, connection_id) DO UPDATE SET
                    provider = excluded.provider, credentials = excluded.credentials,
                    credentials_nonce = excluded.credentials_nonce, credentials_key_id = excluded.credentials_key_id,
                    credentials_expires_at = excluded.credentials_expires_at,
                    connection_config = excluded.connection_config,
                    metadata = COALESCE(excluded.metadata, connections.metadata),
                    end_user = COALESCE(excluded.end_user, connections.end_user),
                    end_user_id = COALESCE(excluded.end_user_id, connections.end_user_id),
                    end_user_organization_id = COALESCE(excluded.end_user_organization_id, connections.end_user_organization_id),
                    webhook_url_override = COALESCE(excluded.webhook_url_override, connections.webhook_url_override),
                    updated_at = excluded.updated_at
                 RETURNING id",
            )
            .bind(&new.provider_config_key)
            .bind(&new.connection_id)
            .bind(&new.provider)
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .bind(&sealed.key_id)
            .bind(new.credentials.expires_at().map(|t| t.timestamp_millis()))
            .bind(Value::Object(new.connection_config.clone()).to_string())
            .bind(&metadata)
            .bind(&end_user)
            .bind(new.end_user.as_ref().map(|u| &u.id))
            .bind(new.end_user.as_ref().and_then(|u| u.organization.as_ref()).map(|o| &o.id))
            .bind(&new.webhook_url_override)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if existing.is_none() || !new.tags.is_empty() {
                sqlx::query("DELETE FROM connection_tags WHERE connection = $1").bind(id).execute(&mut *tx).await?;
                for (k, v) in &new.tags {
                    sqlx::query("INSERT INTO connection_tags (connection, key, value) VALUES ($1, $2, $3)")
                        .bind(id)
                        .bind(k)
                        .bind(v)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            if existing.is_some() { Upserted::Override } else { Upserted::Creation }
        });
        self.changed(&new.provider_config_key, &new.connection_id).await;
        let connection = self
            .get(&new.provider_config_key, &new.connection_id)
            .await?
            .ok_or_else(|| StoreError::Database(sqlx::Error::RowNotFound))?;
        Ok((connection, upserted))
    }

    /// Replaces the credentials of a connection (after a refresh), and its connection config
    /// when one is given; `false` when it is gone.
    pub async fn replace_credentials(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        credentials: &Credentials,
        connection_config: Option<&Map<String, Value>>,
    ) -> Result<bool, StoreError> {
        let sealed = self.seal(credentials)?;
        let config = connection_config.map(|c| Value::Object(c.clone()).to_string());
        let updated = with_pool!(&self.db, pool => {
            sqlx::query(
                "UPDATE connections SET credentials = $3, credentials_nonce = $4, credentials_key_id = $5,
                    credentials_expires_at = $6, updated_at = $7, connection_config = COALESCE($8, connection_config)
                 WHERE provider_config_key = $1 AND connection_id = $2",
            )
            .bind(provider_config_key)
            .bind(connection_id)
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .bind(&sealed.key_id)
            .bind(credentials.expires_at().map(|t| t.timestamp_millis()))
            .bind(now_millis())
            .bind(&config)
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.changed(provider_config_key, connection_id).await;
        Ok(updated > 0)
    }

    /// Applies a `PATCH`; `false` when the connection does not exist.
    pub async fn patch(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        patch: &Patch,
    ) -> Result<bool, StoreError> {
        let end_user = patch.end_user.as_ref().map(serde_json::to_string).transpose()?;
        let found = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "UPDATE connections SET
                    end_user = COALESCE($3, end_user),
                    end_user_id = COALESCE($4, end_user_id),
                    end_user_organization_id = CASE WHEN $3 IS NULL THEN end_user_organization_id ELSE $5 END,
                    webhook_url_override = CASE WHEN $6 THEN $7 ELSE webhook_url_override END,
                    updated_at = $8
                 WHERE provider_config_key = $1 AND connection_id = $2
                 RETURNING id",
            )
            .bind(provider_config_key)
            .bind(connection_id)
            .bind(&end_user)
            .bind(patch.end_user.as_ref().map(|u| &u.id))
            .bind(patch.end_user.as_ref().and_then(|u| u.organization.as_ref()).map(|o| &o.id))
            .bind(patch.webhook_url_override.is_some())
            .bind(patch.webhook_url_override.clone().flatten())
            .bind(now_millis())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = id {
                if patch.end_user.is_some() || patch.tags.is_some() {
                    let mut tags: BTreeMap<String, String> = sqlx::query_as::<_, (String, String)>(
                        "SELECT key, value FROM connection_tags WHERE connection = $1",
                    )
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect();
                    if let Some(user) = &patch.end_user {
                        tags.extend(user.derived_tags());
                    }
                    if let Some(explicit) = &patch.tags {
                        tags.extend(explicit.clone());
                    }
                    sqlx::query("DELETE FROM connection_tags WHERE connection = $1").bind(id).execute(&mut *tx).await?;
                    for (k, v) in &tags {
                        sqlx::query("INSERT INTO connection_tags (connection, key, value) VALUES ($1, $2, $3)")
                            .bind(id)
                            .bind(k)
                            .bind(v)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            tx.commit().await?;
            id.is_some()
        });
        if found {
            self.changed(provider_config_key, connection_id).await;
        }
        Ok(found)
    }

    /// Sets (or, with `merge`, shallow-merges) the metadata of every listed connection, all or
    /// nothing. Returns the ids that do not exist, in which case nothing was written.
    pub async fn set_metadata(
        &self,
        provider_config_key: &str,
        connection_ids: &[String],
        metadata: &Map<String, Value>,
        merge: bool,
    ) -> Result<Vec<String>, StoreError> {
        let missing = with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let mut missing = Vec::new();
            for id in connection_ids {
                let current: Option<Option<String>> = sqlx::query_scalar(
                    "SELECT metadata FROM connections WHERE provider_config_key = $1 AND connection_id = $2",
                )
                .bind(provider_config_key)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(current) = current else {
                    missing.push(id.clone());
                    continue;
                };
                let mut next = if merge {
                    current.as_deref().map(serde_json::from_str::<Map<String, Value>>).transpose()?.unwrap_or_default()
                } else {
                    Map::new()
                };
                next.extend(metadata.clone());
                sqlx::query(
                    "UPDATE connections SET metadata = $3, updated_at = $4
                     WHERE provider_config_key = $1 AND connection_id = $2",
                )
                .bind(provider_config_key)
                .bind(id)
                .bind(Value::Object(next).to_string())
                .bind(now_millis())
                .execute(&mut *tx)
                .await?;
            }
            if missing.is_empty() {
                tx.commit().await?;
            }
            missing
        });
        if missing.is_empty() {
            for id in connection_ids {
                self.changed(provider_config_key, id).await;
            }
        }
        Ok(missing)
    }

    /// Records that the connection was read through the API. Cached copies stay: nothing the
    /// proxy uses changed.
    pub async fn touch(
        &self,
        provider_config_key: &str,
        connection_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        with_pool!(&self.db, pool => {
            sqlx::query("UPDATE connections SET last_fetched_at = $3 WHERE provider_config_key = $1 AND connection_id = $2")
                .bind(provider_config_key)
                .bind(connection_id)
                .bind(at.timestamp_millis())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn delete(&self, provider_config_key: &str, connection_id: &str) -> Result<bool, StoreError> {
        let deleted = with_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM connections WHERE provider_config_key = $1 AND connection_id = $2")
                .bind(provider_config_key)
                .bind(connection_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        self.changed(provider_config_key, connection_id).await;
        Ok(deleted > 0)
    }

    /// Drops the cached copy of one connection.
    pub fn forget(&self, provider_config_key: &str, connection_id: &str) {
        self.cache.invalidate(&(provider_config_key.to_string(), connection_id.to_string()));
    }

    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    async fn changed(&self, provider_config_key: &str, connection_id: &str) {
        self.forget(provider_config_key, connection_id);
        announce(
            &self.db,
            &Change::Connection {
                provider_config_key: provider_config_key.to_string(),
                connection_id: connection_id.to_string(),
            },
        )
        .await;
    }

    async fn tags_of(&self, ids: &[i64]) -> Result<BTreeMap<i64, BTreeMap<String, String>>, StoreError> {
        let mut out: BTreeMap<i64, BTreeMap<String, String>> = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        for chunk in ids.chunks(500) {
            let rows: Vec<(i64, String, String)> = with_pool!(&self.db, pool => {
                let mut q = QueryBuilder::new("SELECT connection, key, value FROM connection_tags WHERE connection IN (");
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await?
            });
            for (id, k, v) in rows {
                out.entry(id).or_default().insert(k, v);
            }
        }
        Ok(out)
    }

    fn seal(&self, credentials: &Credentials) -> Result<Sealed, StoreError> {
        Ok(self.keys.seal(&serde_json::to_vec(credentials)?))
    }

    fn decode(&self, row: Row, tags: BTreeMap<String, String>) -> Result<Connection, StoreError> {
        let plain = self.keys.open(&Sealed {
            ciphertext: row.credentials,
            nonce: row.credentials_nonce,
            key_id: row.credentials_key_id,
        })?;
        Ok(Connection {
            id: row.id,
            connection_id: row.connection_id,
            provider_config_key: row.provider_config_key,
            provider: row.provider,
            credentials: serde_json::from_slice(&plain)?,
            connection_config: serde_json::from_str(&row.connection_config)?,
            metadata: row.metadata.as_deref().map(serde_json::from_str).transpose()?,
            tags,
            end_user: row.end_user.as_deref().map(serde_json::from_str).transpose()?,
            webhook_url_override: row.webhook_url_override,
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
            last_fetched_at: row.last_fetched_at.map(from_millis),
        })
    }
}
